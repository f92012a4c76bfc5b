"""What the LIBERO pick-and-place expert reads from the MuJoCo state (privileged).

A LIBERO task whose BDDL goal is one ``On``/``In`` relation names the object
and where it goes. ``LiberoGoalState`` (an env's ``privileged_extras``) gives,
each step: the object's origin, bounding box and bounding-box corner points;
the target's top and the support point the object should rest on; and every
other scene geom as an oriented box, for planning a grasp that clears them.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

SUPPORTED_RELATIONS = ("on", "in")
ROBOT_BODY_PREFIXES = ("robot0_", "gripper0_", "mount0_")

_CORNERS = np.array(list(itertools.product([-1.0, 1.0], repeat=3)))


def libero_goal(env: Any) -> tuple[str, str, str]:
    """(relation, object, target) of a LIBERO env's single-relation goal; ValueError otherwise."""
    goal = env.parsed_problem["goal_state"]
    if len(goal) != 1 or len(goal[0]) != 3 or goal[0][0] not in SUPPORTED_RELATIONS:
        raise ValueError(f"the LIBERO pick-and-place expert handles a single On/In goal; this task's goal is {goal}")
    relation, obj, target = goal[0]
    return relation, obj, target


def _subtree_collision_geoms(model: Any, root_body: int) -> np.ndarray:
    """Collision geoms of ``root_body`` and its descendants."""
    bodies = set()
    for body in range(model.nbody):
        b = body
        while b > 0 and b != root_body:
            b = model.body_parentid[b]
        if b == root_body:
            bodies.add(body)
    geoms = [g for g in range(model.ngeom)
             if model.geom_bodyid[g] in bodies and (model.geom_contype[g] or model.geom_conaffinity[g])]
    return np.array(geoms, dtype=int)


def _geom_corners(model: Any, data: Any, geoms: np.ndarray) -> np.ndarray:
    """World positions [G, 8, 3] of the corners of each geom's own bounding box."""
    centre, half = model.geom_aabb[geoms, :3], model.geom_aabb[geoms, 3:]
    local = centre[:, None, :] + _CORNERS[None] * half[:, None, :]
    rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
    return data.geom_xpos[geoms][:, None, :] + np.einsum("gij,gkj->gki", rot, local)


def _world_aabb(model: Any, data: Any, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-frame bounding box of the geoms' own bounding boxes."""
    world = _geom_corners(model, data, geoms).reshape(-1, 3)
    return world.min(0), world.max(0)


def _scene_collision_geoms(model: Any, exclude_root: int) -> np.ndarray:
    """Collision geoms the hand could hit: all but the robot's and those of ``exclude_root``'s subtree."""
    import mujoco

    robot = tuple(ROBOT_BODY_PREFIXES)
    own = set(_subtree_collision_geoms(model, exclude_root).tolist())
    return np.array([g for g in range(model.ngeom)
                     if (model.geom_contype[g] or model.geom_conaffinity[g]) and g not in own
                     and not (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[g]) or "")
                     .startswith(robot)], dtype=int)


class LiberoGoalState:
    """``privileged_extras`` for one LIBERO env (its geom lists are cached: one instance per env).

    Entries: object_pos (body origin), object_lo / object_hi (bounding box), object_points
    (corners of its geoms' boxes), target_top (highest point of the target object),
    target_support ([x, y, z]: centre of where the object goes, at the height its bottom rests
    on), obstacle_centre / obstacle_rot / obstacle_half (oriented boxes of the other geoms).
    Empty for other goal shapes (open a drawer, ...).
    """

    def __init__(self) -> None:
        self._geoms: dict[str, np.ndarray] = {}

    def _aabb(self, env: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
        model = env.sim.model._model
        key = name
        if key not in self._geoms:
            self._geoms[key] = _subtree_collision_geoms(model, env.obj_body_id[name])
        return _world_aabb(model, env.sim.data._data, self._geoms[key])

    def _obstacles(self, env: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Oriented boxes (world centre [G, 3], world-from-box rotation [G, 3, 3], half sizes [G, 3])
        bounding every scene geom but the robot's and ``name``'s. Oriented, not world-aligned: the
        walls of a drawer turned 26 degrees would otherwise fill the drawer."""
        model, data = env.sim.model._model, env.sim.data._data
        key = "not " + name
        if key not in self._geoms:
            self._geoms[key] = _scene_collision_geoms(model, env.obj_body_id[name])
        geoms = self._geoms[key]
        rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
        centre = data.geom_xpos[geoms] + np.einsum("gij,gj->gi", rot, model.geom_aabb[geoms, :3])
        return centre, rot, model.geom_aabb[geoms, 3:].copy()

    def __call__(self, env: Any) -> dict[str, np.ndarray]:
        try:
            _, obj, target = libero_goal(env)  # "on" and "in" differ only in the kind of target
        except ValueError:
            return {}  # other goal shapes: nothing for this expert to read
        data = env.sim.data
        state = {"object_pos": np.array(data.body_xpos[env.obj_body_id[obj]])}
        state["object_lo"], state["object_hi"] = self._aabb(env, obj)
        state["object_points"] = _geom_corners(env.sim.model._model, data._data, self._geoms[obj]).reshape(-1, 3)
        state["obstacle_centre"], state["obstacle_rot"], state["obstacle_half"] = self._obstacles(env, obj)
        if target in env.obj_body_id:  # an object: rest on its top
            lo, hi = self._aabb(env, target)
            centre = np.array(data.body_xpos[env.obj_body_id[target]])
            support = np.array([centre[0], centre[1], hi[2]])
        else:  # a region site of a container: rest on the region's floor
            site = env.object_sites_dict[target]
            _, hi = self._aabb(env, site.parent_name)
            centre = np.array(data.get_site_xpos(target))
            half_height = abs(float(np.asarray(site.size, dtype=float).reshape(-1)[-1]))
            support = np.array([centre[0], centre[1], centre[2] - half_height])
        state["target_top"] = np.array([hi[2]])
        state["target_support"] = support
        return state

"""What the LIBERO experts read from the MuJoCo state (privileged).

A LIBERO task's BDDL goal is a list of predicates: ``On``/``In`` name an object
and where it goes; ``Open``/``Close``/``TurnOn``/``TurnOff`` an articulated part.
``LiberoGoalState`` (an env's ``privileged_extras``) gives, each step and for each
subgoal in the order ``plan_subgoals`` reaches them: for a placement, the object's
origin, bounding box and bounding-box corner points, the target's top and the
support point the object should rest on, and every other scene geom as an oriented
box, for planning a grasp that clears them; for a part, its joint and geometry;
before opening a drawer, the objects near its path (``expert_libero_room``).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .expert_libero_room import HAND_BELOW, NEAR_MARGIN, in_the_way, overlaps, sweep_regions

SUPPORTED_RELATIONS = ("on", "in")
# Subgoal kinds (the index is goal<k>/kind in the privileged state).
SUBGOAL_KINDS = ("on", "in", "open", "close", "turnon", "turnoff")
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
    on), obstacle_centre / obstacle_rot / obstacle_half (oriented boxes of the other geoms); per
    subgoal as ``goal<k>/<entry>`` (see ``__call__``). Empty for predicates no expert handles.
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

    def _object_state(self, env: Any, obj: str) -> dict[str, np.ndarray]:
        """Entries for grasping ``obj``: its origin, box, corner points, and the obstacles around it."""
        data = env.sim.data
        state = {"object_pos": np.array(data.body_xpos[env.obj_body_id[obj]])}
        state["object_lo"], state["object_hi"] = self._aabb(env, obj)
        state["object_points"] = _geom_corners(env.sim.model._model, data._data, self._geoms[obj]).reshape(-1, 3)
        state["obstacle_centre"], state["obstacle_rot"], state["obstacle_half"] = self._obstacles(env, obj)
        return state

    def _place_state(self, env: Any, obj: str, target: str) -> dict[str, np.ndarray]:
        """Entries for putting ``obj`` on / in ``target`` (an object, or a region site)."""
        data = env.sim.data
        state = self._object_state(env, obj)
        if target in env.obj_body_id:  # an object: rest on its top
            lo, hi = self._aabb(env, target)
            centre = np.array(data.body_xpos[env.obj_body_id[target]])
            support = np.array([centre[0], centre[1], hi[2]])
        else:  # a region site: rest on its floor
            site = env.object_sites_dict[target]
            centre = np.array(data.get_site_xpos(target))
            half_height = abs(float(np.asarray(site.size, dtype=float).reshape(-1)[-1]))
            if site.parent_name is None:
                # A region of the table itself (LIBERO's TargetZone, e.g. "main_table_stove_front_region"):
                # no parent body, and the zone's site lies a little below the table top (2.7 cm in
                # living_room_table's): the surface is found by a ray down through the zone's centre.
                hi = np.array([0.0, 0.0, self._surface_z(env, centre, obj)])
                support = np.array([centre[0], centre[1], hi[2]])
            else:  # a region of a container (basket, drawer, stove top): rest on its floor
                if getattr(site, "joints", None):  # a drawer: clear its own walls, not the cabinet above it
                    _, hi = _world_aabb(env.sim.model._model, data._data, self._part_geoms(env, site.joints[0]))
                else:
                    _, hi = self._aabb(env, site.parent_name)
                support = np.array([centre[0], centre[1], centre[2] - half_height])
                # The region's corners (LIBERO's In/On want the object's origin inside): two pots can
                # share a stove's cook region, side by side.
                size = np.asarray(site.size, dtype=float).reshape(-1)
                if size.size >= 2:
                    rot = np.asarray(data.get_site_xmat(target)).reshape(3, 3)
                    local = np.array([[sx * size[0], sy * size[1], 0.0] for sx in (-1, 1) for sy in (-1, 1)])
                    state["target_corners"] = (centre + local @ rot.T)[:, :2]
                    state["obstacle_movable"] = self._movable_mask(env, obj)
        state["target_top"] = np.array([hi[2]])
        state["target_support"] = support
        return state

    def _movable_mask(self, env: Any, obj: str) -> np.ndarray:
        """1 for the obstacles (``_obstacles``' order) that belong to a movable object, else 0: what
        stands on a target region and was put there, not the target's own parts (a stove's knobs)."""
        key = "movable not " + obj
        if key not in self._geoms:
            model = env.sim.model._model
            movable = np.concatenate([_subtree_collision_geoms(model, env.obj_body_id[name])
                                      for name in env.objects_dict]) if env.objects_dict else np.zeros(0, int)
            self._geoms[key] = np.isin(self._geoms["not " + obj], movable).astype(np.float64)
        return self._geoms[key]

    def _surface_z(self, env: Any, point: np.ndarray, obj: str) -> float:
        """Height of what is below ``point`` (4 cm above it down; ``obj`` does not count)."""
        import mujoco

        start = np.asarray(point, dtype=np.float64) + np.array([0.0, 0.0, 0.04])
        hit = np.zeros(1, dtype=np.int32)
        model, data = env.sim.model._model, env.sim.data._data
        # Collision geoms only (group 0): the visual meshes have no contact and need not match the surface.
        depth = mujoco.mj_ray(model, data, start, np.array([0.0, 0.0, -1.0]), np.array([1, 0, 0, 0, 0, 0], np.uint8),
                              1, int(env.obj_body_id[obj]), hit)
        return float(start[2] - depth) if depth >= 0 else float(point[2])

    def _part_geoms(self, env: Any, joint_name: str) -> np.ndarray:
        """Collision geoms of the part ``joint_name`` moves (a drawer, a door, a knob)."""
        key = "part " + joint_name
        if key not in self._geoms:
            model = env.sim.model._model
            self._geoms[key] = _subtree_collision_geoms(model, int(model.jnt_bodyid[model.joint(joint_name).id]))
        return self._geoms[key]

    def _joint_state(self, env: Any, name: str, predicate: str) -> dict[str, np.ndarray]:
        """Entries for moving the articulated part ``name`` (a region site of a drawer, or a fixture)."""
        model, data = env.sim.model._model, env.sim.data._data
        if name in env.object_sites_dict:
            site = env.object_sites_dict[name]
            joints, parent = list(site.joints or []), site.parent_name
        else:
            joints, parent = list(env.get_object(name).joints), name
        joint = model.joint(joints[0]).id
        geoms = self._part_geoms(env, joints[0])
        art = env.get_object(parent).object_properties["articulation"]
        # A joint value just inside the range LIBERO's predicate accepts.
        if predicate == "open":
            qpos_goal = float(np.mean(art["default_open_ranges"]))
        elif predicate == "close":
            qpos_goal = float(max(art["default_close_ranges"])) + 0.005
        elif predicate == "turnon":
            qpos_goal = float(min(art["default_turnon_ranges"])) + 0.4
        else:
            qpos_goal = float(max(art["default_turnoff_ranges"])) - 0.005
        return {
            "joint_type": np.array([float(model.jnt_type[joint])]),  # 2 slide, 3 hinge
            "joint_qpos": np.array([float(data.qpos[model.jnt_qposadr[joint]])]),
            "joint_goal": np.array([qpos_goal]),
            "joint_axis": np.array(data.xaxis[joint]),
            "joint_anchor": np.array(data.xanchor[joint]),
            "part_points": _geom_corners(model, data, geoms).reshape(-1, 3),
            "part_rot": np.array(data.xmat[model.jnt_bodyid[joint]]).reshape(3, 3),
        }

    def _blocker_state(self, env: Any, part: dict[str, np.ndarray], picked_later: set[str]) -> dict[str, np.ndarray]:
        """For opening a drawer still closed: ``sweep`` (expert_libero_room's regions), ``hand_low`` (the
        horizontal hand's lowest point) and, for each movable object
        near it (j: its index among the env's objects, stable while it is carried away), its grasp
        entries as ``near<j>/<entry>`` with ``near<j>/in_way``."""
        if int(part["joint_type"][0]) != 2 or part["done"][0] > 0.5:
            return {}
        move = float(part["joint_goal"][0] - part["joint_qpos"][0])
        direction = np.sign(move) * np.asarray(part["joint_axis"], dtype=np.float64)
        points = part["part_points"]
        sweep = sweep_regions(points, direction, abs(move))
        along = points[:, :2] @ sweep[0, :2]
        hand_low = float(points[along > along.max() - 0.012, 2].mean()) - HAND_BELOW
        state = {"sweep": sweep, "hand_low": np.array([hand_low])}
        for j, name in enumerate(env.objects_dict):
            lo, hi = self._aabb(env, name)
            if not any(overlaps(r, lo, hi, NEAR_MARGIN) for r in sweep):
                continue
            way = in_the_way(sweep, lo, hi, float(points[:, 2].min()), hand_low, name in picked_later)
            entries = self._object_state(env, name)
            entries["in_way"] = np.array([float(way)])
            state.update({f"near{j}/{k}": v for k, v in entries.items()})
        return state

    def __call__(self, env: Any) -> dict[str, np.ndarray]:
        """The entries of every subgoal (``plan_subgoals``) as ``goal<k>/<entry>``, with ``goal<k>/kind``
        (SUBGOAL_KINDS index) and ``goal<k>/done`` (LIBERO's own predicate); ``goal_count``. The first
        pick-and-place subgoal's entries are also given without the prefix."""
        goals = env.parsed_problem["goal_state"]
        try:
            subgoals = plan_subgoals(goals, _drawer_regions(env))
        except ValueError:
            return {}
        asked = {tuple(g) for g in goals}
        state: dict[str, np.ndarray] = {"goal_count": np.array([len(subgoals)])}
        plain = None
        for k, goal in enumerate(subgoals):
            if goal[0] in SUPPORTED_RELATIONS:
                entries = self._place_state(env, goal[1], goal[2])
                if plain is None:
                    plain = entries
            else:
                entries = self._joint_state(env, goal[1], goal[0])
            entries["kind"] = np.array([SUBGOAL_KINDS.index(goal[0])])
            done = bool(env._eval_predicate(goal))
            if goal not in asked:  # an open added for putting things in: done once they are in
                done = done or all(env._eval_predicate(g) for g in subgoals if g[0] == "in" and g[2] == goal[1])
            entries["done"] = np.array([float(done)])
            if goal[0] == "open":
                later = {g[1] for g in subgoals[k + 1:] if g[0] in SUPPORTED_RELATIONS}
                entries.update(self._blocker_state(env, entries, later))
            state.update({f"goal{k}/{name}": value for name, value in entries.items()})
        if plain is not None:
            state.update(plain)
        return state


def _drawer_regions(env: Any) -> set[str]:
    """Region sites that move with a joint (a drawer's inside): putting something in needs it open."""
    return {name for name, site in env.object_sites_dict.items() if getattr(site, "joints", None)}


def plan_subgoals(goals: list, drawer_regions: set[str] = frozenset()) -> list[tuple[str, ...]]:
    """The order a scripted expert reaches a LIBERO goal in: each predicate once, in BDDL order within
    a kind, opening a drawer before putting something in it (an ``open`` added when not asked for);
    opens first, then turn on / off (the knob is clear before the pots go on the stove), then
    pick-and-place, and closes last (close the drawer or microwave after putting something in).
    ValueError for predicates no expert handles."""
    goals = [tuple(g) for g in goals]
    unknown = [g for g in goals if g[0] not in SUBGOAL_KINDS or len(g) != (3 if g[0] in SUPPORTED_RELATIONS else 2)]
    if unknown:
        raise ValueError(f"no scripted expert handles the LIBERO goal predicates {unknown}; handled: {SUBGOAL_KINDS}")
    opens = [g for g in goals if g[0] == "open"]
    for g in goals:
        if g[0] == "in" and g[2] in drawer_regions and ("open", g[2]) not in opens:
            opens.append(("open", g[2]))
    order = {"open": 0, "turnon": 1, "turnoff": 1, "on": 2, "in": 2, "close": 3}
    rest = sorted((g for g in goals if g[0] != "open"), key=lambda g: order[g[0]])
    return opens + rest

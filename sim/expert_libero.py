"""Scripted pick-and-place expert for LIBERO tasks whose goal is one ``On``/``In`` relation.

LIBERO-spatial ("pick up the black bowl ... and place it on the plate") and
LIBERO-object ("pick up the X and place it in the basket") both have a goal of
that shape. The expert reads the goal object's and target's geometry from the
MuJoCo state (``expert_libero_scene``), picks a grasp and gripper yaw that
clear the rest of the scene (``expert_libero_grasp``), then runs the shared
pick-and-place phases of ``PickPlaceExpert``: the carry height lifts the
object's bottom clear of both where it started and the target's top; the
release point puts its bottom just above the target's top (``On``) or the
container region's floor (``In``).
"""

from __future__ import annotations

import numpy as np

from .expert_libero_grasp import plan_grasp
from .expert_pick_place import Phase, PickPlaceExpert


class LiberoPickPlaceExpert(PickPlaceExpert):
    """Pick the goal object of a LIBERO On/In task and put it on / in its target.

    Reads the entries of ``LiberoGoalState`` from ``LiberoEnv.privileged_state()``.
    """

    object_key = "object_pos"
    hover_height = 0.06
    release_clearance = 0.015
    carry_clearance = 0.08  # object bottom above the higher of its start and the target's top
    held_tolerance = 0.05  # a bowl held by its rim swings a little
    max_carry_action = 1.0
    pos_integral_gain = 0.05
    yaw_tolerance = 0.05
    grasp_lift = 0.0  # m the grasp planner also keeps the hand clear above the grasp (plan_grasp's lift)
    plan_for_place = False  # the grasp planner also keeps the hand clear over the target (plan_grasp)
    take_handles = False  # objects too wide to take whole are taken by a handle (plan_grasp)

    def reset(self) -> None:
        super().reset()
        self._start_bottom: float | None = None
        self._plan: tuple[np.ndarray, float] | None = None
        self._plan_at = np.zeros(3)

    def grasp_point(self, state: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(state["object_pos"], dtype=np.float64) + self._grasp_plan(state)[0]

    def target_yaw(self, state: dict[str, np.ndarray]) -> float:
        return self._grasp_plan(state)[1]

    def _grasp_plan(self, state: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """(grasp point minus the object's origin, gripper yaw), chosen before descending.

        Re-chosen while approaching if the object was pushed; kept once the fingers go down.
        """
        obj = np.asarray(state["object_pos"], dtype=np.float64)
        stale = self._plan is None or (self.phase is Phase.APPROACH and np.linalg.norm(obj - self._plan_at) > 0.01)
        if stale:
            shift = self.place_target(state) - obj if self.plan_for_place else None
            point, yaw = plan_grasp(state, self.grasp_lift, shift, self.take_handles)
            self._plan, self._plan_at = (point - obj, yaw), obj
        return self._plan

    def carry_height(self, state: dict[str, np.ndarray]) -> float:
        bottom = float(state["object_lo"][2])
        if self._start_bottom is None:
            self._start_bottom = bottom
        hang = float(state["eef_pos"][2]) - bottom  # gripper above the object's bottom
        clear = max(self._start_bottom, float(state["target_top"][0]))
        return clear + self.carry_clearance + hang

    def place_target(self, state: dict[str, np.ndarray]) -> np.ndarray:
        # Where the body origin goes so that the object's bottom rests on the support.
        origin_above_bottom = float(state["object_pos"][2] - state["object_lo"][2])
        support = state["target_support"]
        return np.array([support[0], support[1], support[2] + origin_above_bottom])

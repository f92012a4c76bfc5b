"""Scripted pick-and-place experts: grasp an object, lift, carry, lower, release, retreat.

Same control scheme as ``LiftExpert``: proportional control on privileged poses,
clipped to half the action box, gripper pointing straight down with a fixed
yaw. Subclasses say which object to take and where its centre should end up.
The object's offset from the gripper is measured once it is grasped, so the
place target is met by the object, not by the gripper.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from .expert_base import WaypointExpert


class Phase(Enum):
    APPROACH = "approach"  # above the object, gripper open
    DESCEND = "descend"  # down around the object
    GRASP = "grasp"  # close the fingers in place
    LIFT = "lift"  # straight up to the carry height
    CARRY = "carry"  # across to above the place target
    LOWER = "lower"  # down until the object is just above its target
    RELEASE = "release"  # open the fingers in place
    RETREAT = "retreat"  # back up, gripper open, and stay


class PickPlaceExpert(WaypointExpert):
    """Waypoint controller for one object and one place target (see subclasses).

    ``act(privileged_state)`` returns a float32 [7] action; ``noise_std`` adds
    Gaussian noise to the arm dimensions (not the gripper).
    """

    object_key = ""  # privileged_state key of the object's centre
    hover_height = 0.08  # above the object centre, before descending
    grasp_depth = 0.005  # gripper below the object centre when closing
    carry_z = 1.0  # world height of the gripper while carrying
    release_clearance = 0.01  # object centre above its target when the fingers open
    pos_gain = 1.5
    max_arm_action = 0.5  # half speed: slower demos are easier to imitate
    max_carry_action = 0.5  # speed limit for the long move above the target
    rot_gain = 1.0
    close_steps = 8
    open_steps = 6

    def reset(self) -> None:
        """Start a new episode (the noise stream continues)."""
        self.phase = Phase.APPROACH
        self._count = 0
        self._offset = np.zeros(3)  # object centre minus gripper, once grasped

    def place_target(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """World position the object's centre should end up at."""
        raise NotImplementedError

    def act(self, privileged_state: dict[str, np.ndarray]) -> np.ndarray:
        eef = np.asarray(privileged_state["eef_pos"], dtype=np.float64)
        obj = np.asarray(privileged_state[self.object_key], dtype=np.float64)
        goal = np.asarray(self.place_target(privileged_state), dtype=np.float64)
        target, gripper = self._waypoint(eef, obj, goal)

        limit = self.max_carry_action if self.phase is Phase.CARRY else self.max_arm_action
        return self._action(eef, target, privileged_state["eef_quat"], gripper, limit)

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self._count = 0

    def _waypoint(self, eef: np.ndarray, obj: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, float]:
        """Target gripper position and gripper command; advances the phase."""
        above = obj + np.array([0.0, 0.0, self.hover_height])
        at_grasp = obj - np.array([0.0, 0.0, self.grasp_depth])
        xy_err = np.linalg.norm((eef - obj)[:2])
        held = np.linalg.norm(obj - eef - self._offset) < 0.03
        place_eef = goal + np.array([0.0, 0.0, self.release_clearance]) - self._offset
        carry_over_goal = np.array([place_eef[0], place_eef[1], self.carry_z])

        if self.phase in (Phase.LIFT, Phase.CARRY, Phase.LOWER) and not held:
            self._enter(Phase.APPROACH)  # the object slipped out: start over from above it
        if self.phase is Phase.APPROACH and xy_err < 0.01 and abs(eef[2] - above[2]) < 0.02:
            self._enter(Phase.DESCEND)
        if self.phase is Phase.DESCEND:
            if xy_err > 0.02:
                self._enter(Phase.APPROACH)  # the object was pushed: realign
            elif abs(eef[2] - at_grasp[2]) < 0.01:
                self._enter(Phase.GRASP)
        if self.phase is Phase.GRASP:
            self._count += 1
            if self._count > self.close_steps:
                self._offset = obj - eef
                self._enter(Phase.LIFT)
        if self.phase is Phase.LIFT and eef[2] > self.carry_z - 0.02:
            self._enter(Phase.CARRY)
        if self.phase is Phase.CARRY and np.linalg.norm((eef - carry_over_goal)[:2]) < 0.01:
            self._enter(Phase.LOWER)
        if self.phase is Phase.LOWER and np.linalg.norm(eef - place_eef) < 0.01:
            self._enter(Phase.RELEASE)
        if self.phase is Phase.RELEASE:
            self._count += 1
            if self._count > self.open_steps:
                self._enter(Phase.RETREAT)

        if self.phase is Phase.APPROACH:
            return above, -1.0
        if self.phase is Phase.DESCEND:
            return at_grasp, -1.0
        if self.phase is Phase.GRASP:
            return at_grasp, 1.0
        if self.phase is Phase.LIFT:
            return np.array([eef[0], eef[1], self.carry_z]), 1.0
        if self.phase is Phase.CARRY:
            return carry_over_goal, 1.0
        if self.phase is Phase.LOWER:
            return place_eef, 1.0
        if self.phase is Phase.RELEASE:
            return eef, -1.0
        return np.array([eef[0], eef[1], self.carry_z]), -1.0


class PickPlaceCanExpert(PickPlaceExpert):
    """robosuite PickPlaceCan: the can from the left bin into its quarter of the right bin."""

    object_key = "Can_pos"
    grasp_depth = 0.0
    carry_z = 1.0  # clears the bin walls with the can hanging below the fingers
    inward = (0.045, 0.07)  # from the quarter's centre toward the bin's centre (x, y)
    max_carry_action = 1.0  # the bins are 0.55 m apart: carry at full speed
    release_clearance = 0.03

    def place_target(self, state: dict[str, np.ndarray]) -> np.ndarray:
        # ``target_pos`` is the centre of the can's quarter of the bin, on its floor. The quarter's
        # far corner is at the edge of the Panda's reach, so aim between its centre and the inner
        # corner (still 5 cm inside the quarter), at the height of a can standing on the floor.
        return np.array(state["target_pos"], dtype=np.float64) + np.array([-self.inward[0], -self.inward[1], 0.06])


class StackExpert(PickPlaceExpert):
    """robosuite Stack: the red cube (A, 4 cm) onto the green cube (B, 5 cm)."""

    object_key = "cubeA_pos"
    carry_z = 0.98
    release_clearance = 0.01

    def place_target(self, state: dict[str, np.ndarray]) -> np.ndarray:
        # Centre of A resting on B: half of B (2.5 cm) plus half of A (2 cm) above B's centre.
        return np.array(state["cubeB_pos"], dtype=np.float64) + np.array([0.0, 0.0, 0.045])

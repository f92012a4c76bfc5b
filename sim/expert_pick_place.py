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

from .expert_base import WaypointExpert, gripper_yaw, reach_and_grasp, wrap_angle


class Phase(Enum):
    APPROACH = "approach"  # above the object, gripper open
    DESCEND = "descend"  # down around the object
    GRASP = "grasp"  # close the fingers in place
    LIFT = "lift"  # straight up to the carry height
    CARRY = "carry"  # across to above the place target
    LOWER = "lower"  # down until the object is just above its target
    RELEASE = "release"  # open the fingers in place
    RETREAT = "retreat"  # back up, gripper open, and stay


# Phase changes that wait for the gripper's yaw: before going down around the object, and before
# lowering it onto its target.
_NEEDS_TURNED = {(Phase.APPROACH, Phase.DESCEND), (Phase.CARRY, Phase.LOWER)}


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
    still_distance = 0.001  # eef motion per step (m) below which the arm counts as stopped
    still_steps = 5  # stopped this many steps while lowering: the object is down, let go
    yaw_tolerance = np.inf  # rad; experts that turn the gripper set it (see _NEEDS_TURNED)
    held_tolerance = 0.03  # object drift from its grasp-time offset (m) before it counts as dropped
    open_steps = 6

    def reset(self) -> None:
        """Start a new episode (the noise stream continues)."""
        self.phase = Phase.APPROACH
        self._count = 0
        self._clear_integral()
        self._offset = np.zeros(3)  # object centre minus gripper, once grasped
        self._last_eef: np.ndarray | None = None

    def place_target(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """World position the object's centre should end up at."""
        raise NotImplementedError

    def grasp_point(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """Where the gripper closes: just below the object's centre (override for rims, tall objects)."""
        return np.asarray(state[self.object_key], dtype=np.float64) - np.array([0.0, 0.0, self.grasp_depth])

    def carry_height(self, state: dict[str, np.ndarray]) -> float:
        """World height of the gripper while carrying (override when it depends on the scene)."""
        return self.carry_z

    def target_yaw(self, state: dict[str, np.ndarray]) -> float:
        """Gripper yaw to hold (see ``yaw_down``); fixed unless a subclass turns the gripper."""
        return 0.0

    def act(self, privileged_state: dict[str, np.ndarray]) -> np.ndarray:
        s = privileged_state
        eef = np.asarray(s["eef_pos"], dtype=np.float64)
        obj = np.asarray(s[self.object_key], dtype=np.float64)
        grasp = np.asarray(self.grasp_point(s), dtype=np.float64)
        goal = np.asarray(self.place_target(s), dtype=np.float64)
        yaw = self.target_yaw(s)
        yaw_err = abs(wrap_angle(yaw - gripper_yaw(s["eef_quat"]), 2 * np.pi))
        phase_before = self.phase
        target, gripper = self._waypoint(eef, obj, grasp, goal, self.carry_height(s))
        if yaw_err > self.yaw_tolerance and (phase_before, self.phase) in _NEEDS_TURNED:
            # Reached the waypoint before the gripper finished turning: stay there until it has.
            self.phase = phase_before
            target = eef

        limit = self.max_carry_action if self.phase is Phase.CARRY else self.max_arm_action
        return self._action(eef, target, s["eef_quat"], gripper, limit, yaw=yaw)

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self._count = 0
        self._clear_integral()

    def _waypoint(self, eef: np.ndarray, obj: np.ndarray, at_grasp: np.ndarray, goal: np.ndarray,
                  carry_z: float) -> tuple[np.ndarray, float]:
        """Target gripper position and gripper command; advances the phase."""
        above = at_grasp + np.array([0.0, 0.0, self.hover_height])
        xy_err = np.linalg.norm((eef - at_grasp)[:2])
        held = np.linalg.norm(obj - eef - self._offset) < self.held_tolerance
        place_eef = goal + np.array([0.0, 0.0, self.release_clearance]) - self._offset
        carry_over_goal = np.array([place_eef[0], place_eef[1], carry_z])

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
        if self.phase is Phase.LIFT and eef[2] > carry_z - 0.02:
            self._enter(Phase.CARRY)
        if self.phase is Phase.CARRY and np.linalg.norm((eef - carry_over_goal)[:2]) < 0.01:
            self._enter(Phase.LOWER)
        if self.phase is Phase.LOWER:
            # Also let go once the object rests on something and stops the arm short of the waypoint.
            still = self._last_eef is not None and np.linalg.norm(eef - self._last_eef) < self.still_distance
            self._count = self._count + 1 if still else 0
            if np.linalg.norm(eef - place_eef) < 0.01 or self._count >= self.still_steps:
                self._enter(Phase.RELEASE)
        self._last_eef = eef
        if self.phase is Phase.RELEASE:
            self._count += 1
            if self._count > self.open_steps:
                self._enter(Phase.RETREAT)

        first = reach_and_grasp(self.phase, above, at_grasp)
        if first is not None:
            return first
        if self.phase is Phase.LIFT:
            return np.array([eef[0], eef[1], carry_z]), 1.0
        if self.phase is Phase.CARRY:
            return carry_over_goal, 1.0
        if self.phase is Phase.LOWER:
            return place_eef, 1.0
        if self.phase is Phase.RELEASE:
            return eef, -1.0
        return np.array([eef[0], eef[1], carry_z]), -1.0


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

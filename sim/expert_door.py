"""Scripted expert for robosuite Door: grip the lever handle, press it down, pull the door open.

The door is latched: its lever must turn (about the door's normal) before the
door swings on its vertical hinge; success is the hinge past 0.3 rad. The
lever sticks out 10 cm from the panel toward the robot (+y) and lies along x,
3 cm thick and 4 cm tall. A gripper pointing down would hit the panel with its
hand (the hand is 20 cm long along the finger axis), so the gripper points at
the door (-y) and closes across the lever's height, coming in from the front.
Pressing follows the lever end's arc (tangent from the lever angle,
``handle_qpos``); pulling follows the door's arc about the hinge, 0.255 m from
the door's centre along the panel, on the robot's side; the gripper turns with
the door.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from .expert_base import WaypointExpert, reach_and_grasp, rot_z

HINGE_FROM_DOOR = np.array([-0.255, 0.0, 0.0])  # door_lock.xml, at robosuite's fixed door yaw (about 0.1 rad)
# Gripper pointing along world -y (at the door), fingers closing along world z.
FACING_DOOR = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


class Phase(Enum):
    APPROACH = "approach"  # in front of the lever end, gripper open, turning to face the door
    DESCEND = "descend"  # in toward the door, the fingers around the lever
    GRASP = "grasp"  # close the fingers on it
    PRESS = "press"  # turn the lever down along its arc until the latch is free
    PULL = "pull"  # swing the door open along its arc


class DoorExpert(WaypointExpert):
    """Waypoint controller for robosuite Door (privileged handle_pos, door_pos, hinge_qpos, handle_qpos)."""

    standoff = 0.08  # in front of the lever (toward the robot, +y) before moving in
    press_angle = 1.0  # rad of lever turn before pulling
    arc_step = 0.04  # m along the arc per waypoint: how far ahead of the handle to aim
    max_arm_action = 0.5
    close_steps = 8
    pos_integral_gain = 0.05

    def reset(self) -> None:
        self.phase = Phase.APPROACH
        self._count = 0
        self._hinge: np.ndarray | None = None
        self._clear_integral()

    def act(self, privileged_state: dict[str, np.ndarray]) -> np.ndarray:
        s = privileged_state
        eef = np.asarray(s["eef_pos"], dtype=np.float64)
        handle = np.asarray(s["handle_pos"], dtype=np.float64)
        if self._hinge is None:  # the hinge does not move; the door's centre does once it swings
            self._hinge = np.asarray(s["door_pos"], dtype=np.float64) + HINGE_FROM_DOOR
        lever = abs(float(np.asarray(s["handle_qpos"]).reshape(-1)[0]))
        target, gripper = self._waypoint(eef, handle, lever)
        # Turn the gripper with the door so the lever does not twist in the fingers.
        yaw = float(np.asarray(s["hinge_qpos"]).reshape(-1)[0]) if self.phase is Phase.PULL else 0.0
        return self._action(eef, target, s["eef_quat"], gripper, self.max_arm_action, rotation=rot_z(yaw) @ FACING_DOOR)

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self._count = 0
        self._clear_integral()

    def _waypoint(self, eef: np.ndarray, handle: np.ndarray, lever: float) -> tuple[np.ndarray, float]:
        at_grasp = handle
        above = handle + np.array([0.0, self.standoff, 0.0])  # "above" in the approach direction
        xz_err = np.linalg.norm((eef - at_grasp)[[0, 2]])
        held = np.linalg.norm(eef - handle) < 0.04

        if self.phase in (Phase.PRESS, Phase.PULL) and not held:
            self._enter(Phase.APPROACH)  # the lever slipped out of the fingers: take it again
        if self.phase is Phase.APPROACH and xz_err < 0.01 and abs(eef[1] - above[1]) < 0.02:
            self._enter(Phase.DESCEND)
        if self.phase is Phase.DESCEND and abs(eef[1] - at_grasp[1]) < 0.01:
            self._enter(Phase.GRASP)
        if self.phase is Phase.GRASP:
            self._count += 1
            if self._count > self.close_steps:
                self._enter(Phase.PRESS)
        if self.phase is Phase.PRESS and lever > self.press_angle:
            self._enter(Phase.PULL)

        first = reach_and_grasp(self.phase, above, at_grasp)
        if first is not None:
            return first
        if self.phase is Phase.PRESS:
            # The lever end turns about a pivot on the robot's far side (+x): down first, then toward it.
            tangent = np.array([np.sin(lever), 0.0, -np.cos(lever)])
            return handle + self.arc_step * tangent, 1.0
        radial = (handle - self._hinge) * np.array([1.0, 1.0, 0.0])
        tangent = np.array([-radial[1], radial[0], 0.0]) / max(np.linalg.norm(radial), 1e-6)
        return handle + self.arc_step * tangent, 1.0

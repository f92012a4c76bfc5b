"""Scripted waypoint expert for Lift: above the cube, descend, close, lift.

Proportional control on privileged poses, clipped to the action box, so the
motion is smooth and decelerates into each waypoint: the kind of trajectory a
policy can imitate from images and proprioception. The gripper stays pointing
straight down with a fixed yaw (the Panda's fingers open 8 cm, wider than the
cube's diagonal), which keeps the rotation actions near zero.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from .expert_base import WaypointExpert, reach_and_grasp



class Phase(Enum):
    APPROACH = "approach"  # move above the cube, gripper open
    DESCEND = "descend"  # go down around the cube
    GRASP = "grasp"  # close the gripper in place
    LIFT = "lift"  # raise the cube


class LiftExpert(WaypointExpert):
    """Waypoint controller for robosuite Lift.

    ``act(privileged_state)`` takes ``RobosuiteEnv.privileged_state()`` and
    returns a float32 [7] action. ``noise_std`` adds Gaussian noise to the arm
    dimensions (not the gripper) for diverse demonstrations.
    """

    hover_height = 0.08  # above the cube centre, before descending
    grasp_depth = 0.005  # eef below the cube centre when closing
    lift_height = 0.15  # above the cube's resting height
    pos_gain = 1.5  # action per (error / 5 cm)
    max_arm_action = 0.5  # half speed: slower demos are easier to imitate
    rot_gain = 1.0
    close_steps = 8  # control steps to close the fingers (~0.4 s)

    def reset(self) -> None:
        """Start a new episode (the noise stream continues)."""
        self.phase = Phase.APPROACH
        self._closing_for = 0
        self._rest_z: float | None = None

    def act(self, privileged_state: dict[str, np.ndarray]) -> np.ndarray:
        eef = np.asarray(privileged_state["eef_pos"], dtype=np.float64)
        cube = np.asarray(privileged_state["cube_pos"], dtype=np.float64)
        if self._rest_z is None:
            self._rest_z = float(cube[2])
        target, gripper = self._waypoint(eef, cube)

        return self._action(eef, target, privileged_state["eef_quat"], gripper, self.max_arm_action)

    def _waypoint(self, eef: np.ndarray, cube: np.ndarray) -> tuple[np.ndarray, float]:
        """Target eef position and gripper command; advances the phase."""
        above = cube + np.array([0.0, 0.0, self.hover_height])
        at_grasp = cube - np.array([0.0, 0.0, self.grasp_depth])
        xy_err = np.linalg.norm((eef - cube)[:2])

        if self.phase is Phase.LIFT and eef[2] - cube[2] > 0.04:
            # The cube slipped out: start over from above it.
            self.phase = Phase.APPROACH
            self._closing_for = 0
        if self.phase is Phase.APPROACH and xy_err < 0.01 and abs(eef[2] - above[2]) < 0.02:
            self.phase = Phase.DESCEND
        if self.phase is Phase.DESCEND:
            if xy_err > 0.02:
                self.phase = Phase.APPROACH  # drifted off (cube pushed): realign
            elif abs(eef[2] - at_grasp[2]) < 0.01:
                self.phase = Phase.GRASP
        if self.phase is Phase.GRASP:
            self._closing_for += 1
            if self._closing_for > self.close_steps:
                self.phase = Phase.LIFT

        first = reach_and_grasp(self.phase, above, at_grasp)
        if first is not None:
            return first
        lift_to = np.array([cube[0], cube[1], self._rest_z + self.lift_height])
        return lift_to, 1.0

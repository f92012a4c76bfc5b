"""Scripted expert for robosuite NutAssemblySquare: the square nut by its handle onto the square peg.

The nut lies at a random yaw. The gripper turns to that yaw to take the
handle (fingers across its 3.2 cm width), then, while carrying, turns the
nut square to the peg (the peg is 3.2 cm wide, the hole 4.6 cm, so a square
nut clears it by 7 mm a side) with the handle toward the robot (see
``square_yaw``), centres the hole over the peg, and lowers it until it is just
above the table and lets go.

The object's offset from the gripper is kept in the gripper's frame, so it
stays right while the gripper turns.
"""

from __future__ import annotations

import numpy as np

from .expert_base import gripper_yaw, wrap_angle
from .expert_pick_place import Phase, PickPlaceExpert
from .rotations import quat_xyzw_to_matrix

HANDLE_OFFSET = 0.054  # handle centre from the nut's centre, along the nut's x (square-nut.xml)
TABLE_TOP_Z = 0.82 + 0.025  # NutAssembly's table offset plus half its 5 cm thickness


def _yaw(quat_xyzw: np.ndarray) -> float:
    x, y, z, w = quat_xyzw
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def square_yaw(nut_yaw: float) -> float:
    """The nut's yaw on the peg: square to it (a quarter-turn multiple) at most a quarter turn from
    ``nut_yaw``, with the handle toward the robot (-x) as far as that allows. The peg is near the
    edge of the arm's reach, so a handle on its far side could not be got to; turning the wrist
    further than a quarter turn swings the arm off its path (seen on seed 118)."""
    squared = nut_yaw - wrap_angle(nut_yaw, np.pi / 2)
    options = [squared + k * np.pi / 2 for k in (-1, 0, 1) if abs(squared + k * np.pi / 2 - nut_yaw) <= np.pi / 2]
    return min(options, key=lambda yaw: (np.cos(yaw), abs(yaw - nut_yaw)))


class NutAssemblySquareExpert(PickPlaceExpert):
    """Waypoint controller for robosuite NutAssemblySquare (privileged SquareNut pose, peg_pos)."""

    object_key = "SquareNut_pos"
    grasp_depth = 0.0
    hover_height = 0.06
    carry_z = 1.05  # nut 0.1 m above the peg's top (0.95)
    # The nut comes off the fingers when its bottom meets the table beside a missed peg: release low,
    # with the hole around the peg, so it only has to drop a few millimetres.
    release_clearance = 0.01
    held_tolerance = 0.03
    max_carry_action = 1.0  # peg and nut are 0.35 m apart: carry at full speed
    yaw_tolerance = 0.05  # rad: turn before descending, square the nut before lowering

    def reset(self) -> None:
        super().reset()
        self._local_offset: np.ndarray | None = None
        self._goal_yaw: float | None = None  # the nut's yaw on the peg, chosen once it is held

    def grasp_point(self, state: dict[str, np.ndarray]) -> np.ndarray:
        yaw = _yaw(state["SquareNut_quat"])
        nut = np.asarray(state[self.object_key], dtype=np.float64)
        return nut + HANDLE_OFFSET * np.array([np.cos(yaw), np.sin(yaw), 0.0])

    def place_target(self, state: dict[str, np.ndarray]) -> np.ndarray:
        # Nut centre around the peg, its bottom (1 cm below the centre) on the table.
        peg = np.asarray(state["peg_pos"], dtype=np.float64)
        return np.array([peg[0], peg[1], TABLE_TOP_Z + 0.01])

    def target_yaw(self, state: dict[str, np.ndarray]) -> float:
        eef_yaw = gripper_yaw(state["eef_quat"])
        nut_yaw = _yaw(state["SquareNut_quat"])
        if self.phase in (Phase.APPROACH, Phase.DESCEND, Phase.GRASP):
            # Fingers across the handle: gripper yaw = nut yaw, modulo the gripper's half-turn symmetry.
            return eef_yaw + wrap_angle(nut_yaw - eef_yaw, np.pi)
        if self.phase in (Phase.LIFT, Phase.CARRY, Phase.LOWER):
            if self._goal_yaw is None:
                self._goal_yaw = square_yaw(nut_yaw)
            return eef_yaw + wrap_angle(self._goal_yaw - nut_yaw, 2 * np.pi)
        return eef_yaw

    def act(self, privileged_state: dict[str, np.ndarray]) -> np.ndarray:
        # The grasp-time offset turns with the gripper: keep it in the gripper's frame.
        rot = quat_xyzw_to_matrix(privileged_state["eef_quat"])
        if self.phase in (Phase.LIFT, Phase.CARRY, Phase.LOWER):
            if self._local_offset is None:
                self._local_offset = rot.T @ self._offset
            self._offset = rot @ self._local_offset
        else:
            self._local_offset = None
        return super().act(privileged_state)

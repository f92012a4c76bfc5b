"""Rotation conversions in the robosuite / LIBERO conventions (quaternions xyzw)."""

from __future__ import annotations

import numpy as np


def quat_xyzw_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Axis-angle [3] of a unit quaternion (x, y, z, w), as LIBERO / openpi build the state.

    The angle is ``2 acos(w)`` in [0, 2 pi] with no sign canonicalisation, so a
    gripper pointing down (w near 0, angle near pi) maps continuously; the
    jump is at the identity instead, a pose the arm never takes in these tasks.
    """
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q)
    w = float(np.clip(q[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half < 1e-8:
        return np.zeros(3)
    return q[:3] * (2.0 * np.arccos(w) / sin_half)


def quat_xyzw_to_matrix(quat: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (x, y, z, w)."""
    x, y, z, w = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_rotvec(rot: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, angle in [0, pi]) of a 3x3 rotation matrix."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-8:
        return np.zeros(3)
    antisym = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    if np.pi - angle < 1e-4:
        # Near pi the antisymmetric part (2 sin(angle) axis) vanishes: read the
        # axis off the symmetric part, R = cos I + (1 - cos) axis axis^T + ...
        axis = np.sqrt(np.clip((np.diag(rot) - cos) / (1.0 - cos), 0.0, None))
        k = int(np.argmax(axis))
        for j in range(3):
            if j != k and rot[k, j] + rot[j, k] < 0:
                axis[j] = -axis[j]
        # The symmetric part fixes the axis up to sign; what is left of the
        # antisymmetric part picks the sign (either is right at exactly pi).
        if axis @ antisym < 0:
            axis = -axis
        return axis / np.linalg.norm(axis) * angle
    return antisym / (2.0 * np.sin(angle)) * angle

"""Rotation conversions used for the state vector and the expert."""

import numpy as np
import pytest

from vla.sim.rotations import matrix_to_rotvec, quat_xyzw_to_axis_angle, quat_xyzw_to_matrix


def _rodrigues(rotvec):
    angle = np.linalg.norm(rotvec)
    if angle == 0:
        return np.eye(3)
    k = rotvec / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _quat_from_rotvec(rotvec):
    angle = np.linalg.norm(rotvec)
    axis = rotvec / angle
    return np.concatenate([axis * np.sin(angle / 2), [np.cos(angle / 2)]])


@pytest.mark.parametrize("angle", [1e-3, 0.5, 2.0, np.pi - 1e-6, np.pi - 1e-3, np.pi])
def test_matrix_to_rotvec_round_trips(angle):
    rng = np.random.default_rng(0)
    for _ in range(20):
        axis = rng.normal(size=3)
        rot = _rodrigues(axis / np.linalg.norm(axis) * angle)
        np.testing.assert_allclose(_rodrigues(matrix_to_rotvec(rot)), rot, atol=1e-6)


def test_quaternion_conversions_agree():
    rng = np.random.default_rng(1)
    for _ in range(50):
        rotvec = rng.normal(size=3)
        quat = _quat_from_rotvec(rotvec)
        np.testing.assert_allclose(quat_xyzw_to_matrix(quat), _rodrigues(rotvec), atol=1e-9)
        np.testing.assert_allclose(_rodrigues(quat_xyzw_to_axis_angle(quat)), _rodrigues(rotvec), atol=1e-9)


def test_axis_angle_is_continuous_through_gripper_down():
    # LIBERO convention: no sign flip at w = 0, so a down-pointing gripper
    # (half turn about x) reads about [pi, 0, 0] from either side.
    for w in (-1e-3, 0.0, 1e-3):
        quat = np.array([np.sqrt(1 - w * w), 0.0, 0.0, w])
        np.testing.assert_allclose(quat_xyzw_to_axis_angle(quat), [np.pi - 2 * w, 0, 0], atol=1e-5)
    np.testing.assert_array_equal(quat_xyzw_to_axis_angle(np.array([0.0, 0, 0, 1])), np.zeros(3))

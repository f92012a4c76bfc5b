"""What every scripted waypoint expert shares: seeded action noise, the arm's P(I) controller, gripper yaw."""

from __future__ import annotations

import numpy as np

from .rotations import matrix_to_rotvec, quat_xyzw_to_matrix

# OSC_POSE maps an action of 1 to 5 cm / 0.5 rad of commanded motion per step.
POS_SCALE = 0.05
ROT_SCALE = 0.5
# Gripper pointing down: a half turn about world x.
DOWN = np.diag([1.0, -1.0, -1.0])


def reach_and_grasp(phase, above: np.ndarray, at_grasp: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(target, gripper) of the phases every grasping expert starts with, by phase name: APPROACH
    (above the grasp point, open), DESCEND (to it, open), GRASP (there, closing); None otherwise."""
    return {"APPROACH": (above, -1.0), "DESCEND": (at_grasp, -1.0), "GRASP": (at_grasp, 1.0)}.get(phase.name)


def rot_z(yaw: float) -> np.ndarray:
    """Rotation by `yaw` (rad) about world z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_down(yaw: float) -> np.ndarray:
    """Gripper orientation pointing down, turned by `yaw` (rad) about world z."""
    return rot_z(yaw) @ DOWN


def wrap_angle(angle: float, period: float) -> float:
    """`angle` shifted by whole periods into [-period / 2, period / 2)."""
    return float((angle + period / 2) % period - period / 2)


def gripper_yaw(eef_quat: np.ndarray) -> float:
    """Yaw of a downward-pointing gripper: the angle `yaw_down` would give it."""
    rot = quat_xyzw_to_matrix(eef_quat) @ DOWN.T  # DOWN is its own inverse
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


class WaypointExpert:
    """Base of the scripted experts: subclasses pick a target and a gripper command per step."""

    pos_gain = 1.5  # action per (error / 5 cm)
    rot_gain = 1.0
    # Integral action per (summed error / 5 cm), capped. OSC_POSE has no integral term, so an arm
    # carrying a load (a bowl held by its rim twists the wrist) can stall a centimetre short of a
    # waypoint under proportional control alone; 0 turns it off.
    pos_integral_gain = 0.0
    max_integral_action = 0.5
    integral_zone = 0.03  # m

    def __init__(self, noise_std: float = 0.0, seed: int | None = None) -> None:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self._error_sum = np.zeros(3)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def _action(self, eef: np.ndarray, target: np.ndarray, eef_quat: np.ndarray, gripper: float,
                limit: float, yaw: float = 0.0, rotation: np.ndarray | None = None) -> np.ndarray:
        """Move the end effector toward `target` with the gripper pointing down, turned by `yaw` about
        world z (its fingers then close along world y rotated by `yaw`), or held at the world
        orientation `rotation` (3x3) when given; noise on the arm dims only."""
        action = np.zeros(7)
        action[:3] = self.pos_gain * (target - eef) / POS_SCALE
        if self.pos_integral_gain > 0:
            error = target - eef
            # Only near the waypoint: summing the large errors of a long move would overshoot it.
            if np.linalg.norm(error) < self.integral_zone:
                self._error_sum += error
            integral = self.pos_integral_gain * self._error_sum / POS_SCALE
            action[:3] += np.clip(integral, -self.max_integral_action, self.max_integral_action)
        goal_rot = yaw_down(yaw) if rotation is None else rotation
        rot_err = matrix_to_rotvec(goal_rot @ quat_xyzw_to_matrix(eef_quat).T)
        action[3:6] = self.rot_gain * rot_err / ROT_SCALE
        action[:6] = np.clip(action[:6], -limit, limit)
        if self.noise_std > 0:
            action[:6] += self._rng.normal(0.0, self.noise_std, 6)
        action[6] = gripper
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _clear_integral(self) -> None:
        """Forget the summed error (at each new waypoint: the old one's error says nothing about it)."""
        self._error_sum = np.zeros(3)

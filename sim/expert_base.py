"""What every scripted waypoint expert shares: seeded action noise and the arm's P-controller."""

from __future__ import annotations

import numpy as np

from .rotations import matrix_to_rotvec, quat_xyzw_to_matrix

# OSC_POSE maps an action of 1 to 5 cm / 0.5 rad of commanded motion per step.
POS_SCALE = 0.05
ROT_SCALE = 0.5
# Gripper pointing down: a half turn about world x.
DOWN = np.diag([1.0, -1.0, -1.0])


class WaypointExpert:
    """Base of the scripted experts: subclasses pick a target and a gripper command per step."""

    pos_gain = 1.5  # action per (error / 5 cm)
    rot_gain = 1.0

    def __init__(self, noise_std: float = 0.0, seed: int | None = None) -> None:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def _action(self, eef: np.ndarray, target: np.ndarray, eef_quat: np.ndarray, gripper: float,
                limit: float) -> np.ndarray:
        """Move the end effector toward `target` with the gripper pointing down; noise on the arm dims only."""
        action = np.zeros(7)
        action[:3] = self.pos_gain * (target - eef) / POS_SCALE
        rot_err = matrix_to_rotvec(DOWN @ quat_xyzw_to_matrix(eef_quat).T)
        action[3:6] = self.rot_gain * rot_err / ROT_SCALE
        action[:6] = np.clip(action[:6], -limit, limit)
        if self.noise_std > 0:
            action[:6] += self._rng.normal(0.0, self.noise_std, 6)
        action[6] = gripper
        return np.clip(action, -1.0, 1.0).astype(np.float32)

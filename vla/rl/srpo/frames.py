"""A trajectory's video for the world-model encoder: n frames sampled uniformly across the episode.

The rollout keeps one frame per chunk boundary (vla/rl/rollout.py, frame_camera). An episode with at
least n of them gives n frames spread evenly from the first to the last (both included); a shorter one
is padded by cycling through its frames in order (0, 1, ..., L-1, 0, 1, ...), as the paper pads short
videos, so every trajectory's video has the same length.
"""

from __future__ import annotations

import numpy as np


class NoFramesError(ValueError):
    """A trajectory with no frames: nothing to embed."""


def frame_indices(n_available: int, n_frames: int) -> np.ndarray:
    """Indices of the n_frames frames taken from n_available (>= 1)."""
    if n_available < 1:
        raise NoFramesError("no frames to sample from")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if n_available >= n_frames:
        return np.round(np.linspace(0, n_available - 1, n_frames)).astype(np.int64)
    return np.arange(n_frames) % n_available


def trajectory_video(frames: list[np.ndarray], n_frames: int, name: str = "trajectory") -> np.ndarray:
    """uint8 [n_frames, H, W, 3] from a trajectory's frames; NoFramesError naming it when it has none."""
    if not frames:
        raise NoFramesError(f"{name} has no frames (was the rollout collected with a frame_camera?)")
    idx = frame_indices(len(frames), n_frames)
    return np.stack([frames[i] for i in idx])

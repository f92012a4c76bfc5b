"""Small random datasets for the vla.data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla.data import LeRobotDatasetWriter

H, W = 12, 16  # not square, so a height/width mix-up shows
STATE_DIM, ACTION_DIM = 8, 7
FEATURES = {
    "observation.images.agentview": {"dtype": "image", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
    "observation.images.wrist": {"dtype": "image", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": [STATE_DIM], "names": [f"s{i}" for i in range(STATE_DIM)]},
    "action": {"dtype": "float32", "shape": [ACTION_DIM], "names": [f"a{i}" for i in range(ACTION_DIM)]},
}
CAMERAS = ["observation.images.agentview", "observation.images.wrist"]
TASKS = ["pick up the red cube", "open the drawer"]


def random_frame(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "observation.images.agentview": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "observation.images.wrist": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=STATE_DIM).astype(np.float32),
        "action": rng.uniform(-1, 1, size=ACTION_DIM).astype(np.float32),
    }


def random_episodes(seed: int = 0, lengths=(5, 7, 4), tasks=TASKS) -> list[list[tuple[dict, str]]]:
    """Episodes as lists of (frame, task); episode e uses task e % len(tasks)."""
    rng = np.random.default_rng(seed)
    return [[(random_frame(rng), tasks[e % len(tasks)]) for _ in range(n)] for e, n in enumerate(lengths)]


def write_dataset(root: Path, episodes, *, fps: int = 10, **kwargs) -> Path:
    with LeRobotDatasetWriter(root, fps=fps, robot_type="panda", features=FEATURES, **kwargs) as writer:
        for episode in episodes:
            for frame, task in episode:
                writer.add_frame(frame, task)
            writer.save_episode()
    return root


def flat(episodes, key: str) -> np.ndarray:
    return np.stack([frame[key] for episode in episodes for frame, _ in episode])


def expected_action_chunks(episodes, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, horizon, A] actions of the next frames of the same episode, last one repeated; and the pad mask."""
    chunks, pads = [], []
    for episode in episodes:
        actions = np.stack([frame["action"] for frame, _ in episode])
        n = len(actions)
        for t in range(n):
            steps = np.arange(t, t + horizon)
            chunks.append(actions[np.minimum(steps, n - 1)])
            pads.append(steps >= n)
    return np.stack(chunks), np.stack(pads)

"""Video datasets both ways with lerobot 0.4.4 itself: it writes one that we read, it reads one we wrote.

Needs VLA_LEROBOT_PYTHON (a Python with lerobot 0.4.4; scripts/check_lerobot_compat.sh builds one),
like tests/data/test_lerobot_compat.py; skipped otherwise. The frames are compared within the codec
tolerance of tests/data/video_helpers.py, and each row must get its own frame.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.data.video_helpers import MEAN_ABS_TOLERANCE, camera_frames, mean_abs, nearest_original
from vla.data import LeRobotDataset, LeRobotDatasetWriter

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "lerobot_video_compat.py"
LEROBOT_PYTHON = os.environ.get("VLA_LEROBOT_PYTHON")
CAMERA = "observation.images.front"
FPS, H, W = 30, 32, 48
LENGTHS = (9, 6, 7)

pytestmark = pytest.mark.skipif(
    not LEROBOT_PYTHON,
    reason="VLA_LEROBOT_PYTHON is not set (a Python with lerobot 0.4.4; scripts/check_lerobot_compat.sh builds one)",
)


def run_lerobot(tmp_path: Path, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path / "lerobot_home")}
    result = subprocess.run([LEROBOT_PYTHON, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, f"lerobot failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["lerobot_version"] == "0.4.4"
    return summary


def source(n: int) -> tuple[np.ndarray, np.ndarray]:
    return camera_frames(n, H, W), np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32)


def test_we_read_a_video_dataset_lerobot_wrote(tmp_path):
    camera, state = source(sum(LENGTHS))
    np.savez(tmp_path / "frames.npz", camera=camera, state=state, lengths=np.array(LENGTHS), fps=np.array(FPS))
    root = tmp_path / "lerobot_ds"
    run_lerobot(tmp_path, "write", str(root), str(tmp_path / "frames.npz"))
    ds = LeRobotDataset(root)
    assert ds.video_keys == [CAMERA] and ds.num_episodes == len(LENGTHS)
    got = np.stack([ds[i][CAMERA].numpy() for i in range(len(ds))])
    assert mean_abs(got, camera) < MEAN_ABS_TOLERANCE
    np.testing.assert_array_equal(nearest_original(got, camera), np.arange(len(ds)))
    np.testing.assert_array_equal(np.stack([ds[i]["observation.state"].numpy() for i in range(len(ds))]), state)


def test_lerobot_reads_a_video_dataset_we_wrote(tmp_path):
    camera, state = source(sum(LENGTHS))
    features = {CAMERA: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
                "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]}}
    root = tmp_path / "ours"
    with LeRobotDatasetWriter(root, fps=FPS, robot_type="panda", features=features) as writer:
        i = 0
        for length in LENGTHS:
            for _ in range(length):
                writer.add_frame({CAMERA: camera[i], "observation.state": state[i]}, "stack the cubes")
                i += 1
            writer.save_episode()
    summary = run_lerobot(tmp_path, "read", str(root), str(tmp_path / "read.npz"))
    assert summary["read"] == sum(LENGTHS) and summary["video_keys"] == [CAMERA]
    with np.load(tmp_path / "read.npz") as npz:
        got, got_state = npz["camera"], npz["state"]
    assert mean_abs(got, camera) < MEAN_ABS_TOLERANCE
    np.testing.assert_array_equal(nearest_original(got, camera), np.arange(len(camera)))
    np.testing.assert_array_equal(got_state, state)

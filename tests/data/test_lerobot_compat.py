"""lerobot itself loads what we write (needs a Python with lerobot 0.4.4).

Set VLA_LEROBOT_PYTHON to that interpreter; scripts/check_lerobot_compat.sh
builds one and runs this test. lerobot cannot live in the project's venv (it
pins torch < 2.11 and pulls a CUDA build), hence the separate interpreter.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.data.helpers import CAMERAS, TASKS, expected_action_chunks, flat, random_episodes, write_dataset
from vla.data import LeRobotDataset

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "lerobot_compat_check.py"
LEROBOT_PYTHON = os.environ.get("VLA_LEROBOT_PYTHON")
HORIZON = 3

pytestmark = pytest.mark.skipif(
    not LEROBOT_PYTHON,
    reason="VLA_LEROBOT_PYTHON is not set (a Python with lerobot 0.4.4; scripts/check_lerobot_compat.sh builds one)",
)


def expected_arrays(episodes, fps: int) -> dict[str, np.ndarray]:
    chunks, pads = expected_action_chunks(episodes, HORIZON)
    lengths = [len(e) for e in episodes]
    ends = np.cumsum(lengths)
    out = {
        "fps": np.array(fps),
        "action_horizon": np.array(HORIZON),
        "tasks": np.array(TASKS),
        "camera_keys": np.array(CAMERAS),
        "episode_ranges": np.stack([ends - lengths, ends], axis=1),
        "observation.state": flat(episodes, "observation.state"),
        "action": chunks,
        "action_is_pad": pads,
        "task_index": np.array([TASKS.index(task) for e in episodes for _, task in e]),
        "episode_index": np.repeat(np.arange(len(episodes)), lengths),
        "frame_index": np.concatenate([np.arange(n) for n in lengths]),
        "index": np.arange(sum(lengths)),
    }
    for cam in CAMERAS:
        out[f"image.{cam}"] = flat(episodes, cam)
    return out


@pytest.mark.parametrize("layout", [{}, {"data_files_size_in_mb": 0.001, "chunks_size": 2}], ids=["one-file", "rolled"])
def test_lerobot_reads_our_dataset(tmp_path, layout):
    fps = 10
    episodes = random_episodes(seed=9, lengths=(5, 7, 4))
    root = write_dataset(tmp_path / "ds", episodes, fps=fps, **layout)
    expected = expected_arrays(episodes, fps)
    ours = LeRobotDataset(root, action_horizon=HORIZON)  # our reader agrees with the same expectations
    for i in (0, 4, 11, 15):
        np.testing.assert_array_equal(ours[i]["action"].numpy(), expected["action"][i])
    np.savez(tmp_path / "expected.npz", **expected)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path / "lerobot_home")}
    result = subprocess.run(
        [LEROBOT_PYTHON, str(CHECK), str(root), str(tmp_path / "expected.npz")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    summary_line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"lerobot check failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    summary = json.loads(summary_line)
    assert summary["ok"] and summary["frames_checked"] == 16
    assert summary["lerobot_version"] == "0.4.4"

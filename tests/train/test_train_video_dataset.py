"""`vla collect --dataset.video=true` writes mp4 camera streams; `vla train` trains on them as on PNG frames."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.data.video_helpers import mean_abs
from vla.cli import main
from vla.data import LeRobotDataset

pytest.importorskip("av")

TINY = ["--policy.depth=1", "--policy.vision_layers=1", "--batch_size=4", "--steps=3", "--log_every=1"]
CAMERA = "observation.images.agentview"
COLLECT = ["collect", "--num_episodes=1", "--env.max_episode_steps=60"]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """The same scripted episode collected twice (same seed): as PNG frames and as video."""
    root = tmp_path_factory.mktemp("demos")
    assert main([*COLLECT, f"--output_dir={root / 'png'}"]) == 0
    assert main([*COLLECT, f"--output_dir={root / 'video'}", "--dataset.video=true"]) == 0
    return root / "png", root / "video"


def test_collect_writes_cameras_as_video(demos):
    png, video = demos
    info = json.loads((video / "meta/info.json").read_text())
    assert info["features"][CAMERA]["dtype"] == "video"
    assert info["features"][CAMERA]["info"]["video.codec"] == "av1"
    assert (video / f"videos/{CAMERA}/chunk-000/file-000.mp4").is_file()
    assert CAMERA not in pq.read_schema(video / "data/chunk-000/file-000.parquet").names
    size = lambda root: sum(p.stat().st_size for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert size(video) < size(png)

    a, b = LeRobotDataset(png), LeRobotDataset(video)
    assert a.num_frames == b.num_frames
    frames_png = np.stack([a[i][CAMERA].numpy() for i in range(len(a))])
    frames_video = np.stack([b[i][CAMERA].numpy() for i in range(len(b))])
    assert mean_abs(frames_video, frames_png) < 8.0  # rendered scenes: codec error only
    np.testing.assert_array_equal(b[5]["observation.state"].numpy(), a[5]["observation.state"].numpy())


def test_train_runs_on_a_video_dataset(demos, tmp_path):
    _, video = demos
    run = tmp_path / "run"
    assert main(["train", f"--dataset={video}", f"--output_dir={run}", *TINY]) == 0
    assert (run / "policy" / "model.safetensors").is_file()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss_avg_last_100"])
    assert 0 <= summary["data_wait_seconds"] < summary["seconds"]

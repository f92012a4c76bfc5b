"""`vla train` on a video dataset that lerobot 0.4.4 itself wrote (tests/data/fixtures/lerobot_video_ds,
made by scripts/make_lerobot_video_fixture.py; provenance in tests/data/fixtures/README.md). Needs no lerobot."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.data.video_helpers import MEAN_ABS_TOLERANCE, mean_abs, nearest_original
from vla.cli import main
from vla.data import LeRobotDataset

pytest.importorskip("av")

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "fixtures" / "lerobot_video_ds"
CAMERA = "observation.images.front"


def _source() -> dict:
    spec = importlib.util.spec_from_file_location("make_fixture", REPO / "scripts" / "make_lerobot_video_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source()


@pytest.fixture
def dataset(tmp_path) -> Path:
    return shutil.copytree(FIXTURE, tmp_path / "lerobot_video_ds")  # nothing touches the checked-in copy


def test_the_fixture_is_lerobot_s_av1_video_layout(dataset):
    info = json.loads((dataset / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2
    assert info["features"][CAMERA]["dtype"] == "video" and info["features"][CAMERA]["info"]["video.codec"] == "av1"
    assert sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file()) < 200_000


def test_we_read_every_frame_lerobot_wrote(dataset):
    src = _source()
    ds = LeRobotDataset(dataset)
    assert ds.video_keys == [CAMERA] and ds.num_episodes == 2 and len(ds) == len(src["camera"])
    got = np.stack([ds[i][CAMERA].numpy() for i in range(len(ds))])
    assert mean_abs(got, src["camera"]) < MEAN_ABS_TOLERANCE
    np.testing.assert_array_equal(nearest_original(got, src["camera"]), np.arange(len(ds)))
    actions = np.stack([ds[i]["action"].numpy() for i in range(len(ds))])  # [N, chunk 1, 2]
    np.testing.assert_array_equal(actions[:, 0], src["action"])


def test_vla_train_trains_on_it(dataset, tmp_path):
    run = tmp_path / "run"
    assert main(["train", f"--dataset={dataset}", f"--output_dir={run}", "--policy.cameras=[front]",
                 "--policy.depth=1", "--policy.vision_layers=1", "--batch_size=4", "--steps=3", "--log_every=1"]) == 0
    assert (run / "policy" / "model.safetensors").is_file()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss_avg_last_100"])

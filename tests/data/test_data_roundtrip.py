import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.data.helpers import (
    ACTION_DIM,
    CAMERAS,
    FEATURES,
    STATE_DIM,
    TASKS,
    H,
    W,
    expected_action_chunks,
    flat,
    random_episodes,
    write_dataset,
)
from vla.data import LeRobotDataset, LeRobotDatasetWriter

STANDARD = ["timestamp", "frame_index", "episode_index", "index", "task_index"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    episodes = random_episodes(seed=1)
    root = write_dataset(tmp_path_factory.mktemp("rt") / "ds", episodes, fps=15)
    return root, episodes


def test_round_trip_metadata(written):
    root, episodes = written
    ds = LeRobotDataset(root)
    assert ds.fps == 15
    assert ds.num_episodes == 3
    assert ds.num_frames == len(ds) == 16
    assert ds.tasks == TASKS
    assert ds.camera_keys == CAMERAS
    assert ds.episode_ranges == [(0, 5), (5, 12), (12, 16)]
    assert list(ds.features) == [*FEATURES, *STANDARD]
    assert ds.features["observation.state"]["shape"] == [STATE_DIM]
    assert ds.robot_type == "panda"


def test_round_trip_every_frame_equal(written):
    root, episodes = written
    ds = LeRobotDataset(root)
    truth = [(frame, task, e, t) for e, ep in enumerate(episodes) for t, (frame, task) in enumerate(ep)]
    for i, (frame, task, e, t) in enumerate(truth):
        item = ds[i]
        for cam in CAMERAS:
            assert item[cam].dtype == torch.uint8 and item[cam].shape == (H, W, 3)
            np.testing.assert_array_equal(item[cam].numpy(), frame[cam])
        assert item["observation.state"].dtype == torch.float32 and item["observation.state"].shape == (STATE_DIM,)
        np.testing.assert_array_equal(item["observation.state"].numpy(), frame["observation.state"])
        assert item["action"].shape == (1, ACTION_DIM) and item["action"].dtype == torch.float32
        np.testing.assert_array_equal(item["action"][0].numpy(), frame["action"])
        assert item["action_is_pad"].tolist() == [False]
        assert item["task"] == task
        assert item["episode_index"] == e and item["frame_index"] == t


def test_returned_tensors_do_not_alias_the_cache(written):
    root, _ = written
    ds = LeRobotDataset(root, action_horizon=3)
    first = ds[2]
    first["observation.images.wrist"].fill_(0)
    first["action"].fill_(0)
    first["observation.state"].fill_(0)
    again = ds[2]
    assert again["observation.images.wrist"].any() and again["action"].any() and again["observation.state"].any()


def test_action_chunks_padded_at_episode_end(written):
    root, episodes = written
    horizon = 4
    ds = LeRobotDataset(root, action_horizon=horizon)
    chunks, pads = expected_action_chunks(episodes, horizon)
    for i in range(len(ds)):
        item = ds[i]
        assert item["action"].shape == (horizon, ACTION_DIM)
        np.testing.assert_array_equal(item["action"].numpy(), chunks[i])
        np.testing.assert_array_equal(item["action_is_pad"].numpy(), pads[i])
    # Last frame of episode 0 (index 4): its own action, then the same action repeated, never episode 1's.
    last = ds[4]
    assert last["action_is_pad"].tolist() == [False, True, True, True]
    last_action = episodes[0][-1][0]["action"]
    for row in last["action"].numpy():
        np.testing.assert_array_equal(row, last_action)
    # Two before the end: two real actions then padding.
    assert ds[3]["action_is_pad"].tolist() == [False, False, True, True]
    np.testing.assert_array_equal(ds[3]["action"][1].numpy(), last_action)


def test_horizon_longer_than_an_episode(written):
    root, episodes = written
    ds = LeRobotDataset(root, action_horizon=10)
    item = ds[12]  # first frame of the 4-frame episode 2
    assert item["action_is_pad"].tolist() == [False] * 4 + [True] * 6
    chunks, _ = expected_action_chunks(episodes, 10)
    np.testing.assert_array_equal(item["action"].numpy(), chunks[12])


def test_index_errors(written):
    root, episodes = written
    ds = LeRobotDataset(root)
    assert ds[-1]["frame_index"] == 3 and ds[-1]["episode_index"] == 2
    with pytest.raises(IndexError):
        ds[16]
    with pytest.raises(IndexError):
        ds[-17]
    with pytest.raises(ValueError, match="action_horizon"):
        LeRobotDataset(root, action_horizon=0)


def test_dataloader_collates_batches(written):
    root, _ = written
    ds = LeRobotDataset(root, action_horizon=2)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["observation.images.agentview"].shape == (4, H, W, 3)
    assert batch["action"].shape == (4, 2, ACTION_DIM)
    assert batch["action_is_pad"].dtype == torch.bool
    assert batch["task"] == [TASKS[0]] * 4
    assert batch["frame_index"].tolist() == [0, 1, 2, 3]


def test_tasks_per_frame_and_per_episode(tmp_path):
    episodes = random_episodes(seed=2, lengths=(3, 3))
    # Episode 1 switches task halfway; a task seen before keeps its index.
    episodes[1] = [(frame, task) for (frame, _), task in zip(episodes[1], ["b task", "a task", "a task"], strict=True)]
    episodes[0] = [(frame, "a task") for frame, _ in episodes[0]]
    root = write_dataset(tmp_path / "ds", episodes)
    ds = LeRobotDataset(root)
    assert ds.tasks == ["a task", "b task"]
    assert [ds[i]["task"] for i in range(6)] == ["a task"] * 3 + ["b task", "a task", "a task"]
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["tasks"] for r in rows] == [["a task"], ["b task", "a task"]]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_tasks"] == 2


def test_data_rolls_into_new_files_and_chunks(tmp_path):
    episodes = random_episodes(seed=3, lengths=(4, 5, 3, 6, 2))
    # A limit smaller than one episode gives one file per episode; two files per chunk folder.
    root = write_dataset(tmp_path / "ds", episodes, data_files_size_in_mb=0.001, chunks_size=2)
    files = sorted(p.relative_to(root).as_posix() for p in (root / "data").glob("*/*.parquet"))
    assert files == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "data/chunk-001/file-000.parquet",
        "data/chunk-001/file-001.parquet",
        "data/chunk-002/file-000.parquet",
    ]
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["data/chunk_index"], r["data/file_index"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    ds = LeRobotDataset(root, action_horizon=3)
    np.testing.assert_array_equal(
        np.stack([ds[i]["observation.state"].numpy() for i in range(len(ds))]), flat(episodes, "observation.state")
    )
    chunks, _ = expected_action_chunks(episodes, 3)
    np.testing.assert_array_equal(np.stack([ds[i]["action"].numpy() for i in range(len(ds))]), chunks)


def test_default_size_keeps_one_file(written):
    root, _ = written
    assert [p.name for p in (root / "data").glob("*/*.parquet")] == ["file-000.parquet"]


def test_extra_numeric_features_round_trip(tmp_path):
    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": [1], "names": ["g"]},
        "next.reward": {"dtype": "float64", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
    }
    with LeRobotDatasetWriter(tmp_path / "ds", fps=5, robot_type="toy", features=features) as writer:
        for t in range(3):
            writer.add_frame(
                {
                    "observation.state": np.array([t, -t], dtype=np.float32),
                    "action": np.array([0.5 * t], dtype=np.float32),
                    "next.reward": np.array([t / 10], dtype=np.float64),
                    "next.success": np.array([t == 2]),
                },
                task="toy",
            )
        writer.save_episode()
    ds = LeRobotDataset(tmp_path / "ds", action_horizon=2)
    assert ds.camera_keys == []
    item = ds[2]
    assert item["next.reward"].dtype == torch.float64 and item["next.reward"].tolist() == [0.2]
    assert item["next.success"].tolist() == [True]
    assert item["action"].tolist() == [[1.0], [1.0]]
    assert item["action_is_pad"].tolist() == [False, True]


def test_getitem_is_fast_once_images_are_cached(written):
    root, _ = written
    ds = LeRobotDataset(root, action_horizon=8)
    for i in range(len(ds)):
        ds[i]
    reps = 30
    start = time.perf_counter()
    for _ in range(reps):
        for i in range(len(ds)):
            ds[i]
    per_item = (time.perf_counter() - start) / (reps * len(ds))
    # Typically ~30 us here; the bound leaves room for a busy shared machine.
    assert per_item < 1e-3, f"__getitem__ took {per_item * 1e6:.0f} us"

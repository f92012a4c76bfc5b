"""Video features through our writer and reader: frames, metadata as lerobot writes it, files, errors."""

import json
import pickle
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.data.video_helpers import MEAN_ABS_TOLERANCE, camera_frames, mean_abs, nearest_original
from vla.data import DatasetError, LeRobotDataset, LeRobotDatasetWriter, compute_stats
from vla.data.schema import EPISODE_COLUMNS

pytest.importorskip("av")

H, W = 24, 32  # not square, so a height/width mix-up shows
FPS = 10
LENGTHS = (5, 7, 4)
VIDEO_A, VIDEO_B, IMAGE = "observation.images.front", "observation.images.wrist", "observation.images.side"
FEATURES = {
    VIDEO_A: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
    VIDEO_B: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
    IMAGE: {"dtype": "image", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": [3], "names": None},
    "action": {"dtype": "float32", "shape": [2], "names": None},
}
EPISODES = "meta/episodes/chunk-000/file-000.parquet"


def originals(lengths=LENGTHS, height=H, width=W) -> dict[str, np.ndarray]:
    n = sum(lengths)
    rng = np.random.default_rng(0)
    return {
        VIDEO_A: camera_frames(n, height, width, camera=0),
        VIDEO_B: camera_frames(n, height, width, camera=1),
        IMAGE: camera_frames(n, height, width, camera=2),
        "observation.state": rng.normal(size=(n, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
    }


def write(root, data, lengths=LENGTHS, features=FEATURES, **kwargs):
    with LeRobotDatasetWriter(root, fps=FPS, robot_type="panda", features=features, **kwargs) as writer:
        i = 0
        for n in lengths:
            for _ in range(n):
                writer.add_frame({k: v[i] for k, v in data.items()}, "stack the cubes")
                i += 1
            writer.save_episode()
    return root


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    data = originals()
    return write(tmp_path_factory.mktemp("video") / "ds", data), data


def test_frames_round_trip_within_codec_tolerance(written):
    root, data = written
    ds = LeRobotDataset(root, action_horizon=3)
    assert ds.camera_keys == [VIDEO_A, VIDEO_B, IMAGE] and ds.video_keys == [VIDEO_A, VIDEO_B]
    items = [ds[i] for i in range(len(ds))]
    for key in (VIDEO_A, VIDEO_B):
        got = np.stack([item[key].numpy() for item in items])
        assert got.dtype == np.uint8 and got.shape == data[key].shape  # what an image feature gives
        assert mean_abs(got, data[key]) < MEAN_ABS_TOLERANCE
        # every row gets its own frame, not a neighbour's (timestamps line up across episodes)
        np.testing.assert_array_equal(nearest_original(got, data[key]), np.arange(len(ds)))
    np.testing.assert_array_equal(np.stack([item[IMAGE].numpy() for item in items]), data[IMAGE])  # PNG: exact
    np.testing.assert_array_equal(np.stack([item["observation.state"].numpy() for item in items]),
                                  data["observation.state"])
    batch = torch.utils.data.default_collate(items[:4])
    assert batch[VIDEO_A].shape == (4, H, W, 3) and batch[VIDEO_A].dtype == torch.uint8


def test_metadata_as_lerobot_writes_it(written):
    root, data = written
    info = json.loads((root / "meta/info.json").read_text())
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["features"][VIDEO_A] == {
        "dtype": "video",
        "shape": [H, W, 3],
        "names": ["height", "width", "channels"],
        "info": {"video.height": H, "video.width": W, "video.codec": "av1", "video.pix_fmt": "yuv420p",
                 "video.is_depth_map": False, "video.fps": FPS, "video.channels": 3, "has_audio": False},
    }
    assert "info" not in info["features"][IMAGE]
    data_columns = pq.read_schema(root / "data/chunk-000/file-000.parquet").names
    assert VIDEO_A not in data_columns and VIDEO_B not in data_columns and IMAGE in data_columns

    episodes = pq.read_table(root / EPISODES)
    video_columns = [f"videos/{key}/{c}" for key in (VIDEO_A, VIDEO_B)
                     for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    names = episodes.column_names
    assert names[: len(EPISODE_COLUMNS) + len(video_columns)] == [*EPISODE_COLUMNS, *video_columns]
    assert names[-2:] == ["meta/episodes/chunk_index", "meta/episodes/file_index"]
    ends = np.cumsum(LENGTHS) / FPS  # the episodes follow each other in one file
    for key in (VIDEO_A, VIDEO_B):
        np.testing.assert_allclose(episodes.column(f"videos/{key}/from_timestamp").to_numpy(),
                                   ends - np.array(LENGTHS) / FPS)
        np.testing.assert_allclose(episodes.column(f"videos/{key}/to_timestamp").to_numpy(), ends)
        assert episodes.column(f"videos/{key}/file_index").to_pylist() == [0, 0, 0]

    # statistics of the frames before encoding, exactly as for an image feature
    stats = json.loads((root / "meta/stats.json").read_text())
    expected = compute_stats({VIDEO_A: data[VIDEO_A]})[VIDEO_A]
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(stats[VIDEO_A][name]), value, err_msg=name)
    assert np.asarray(stats[VIDEO_A]["mean"]).shape == (3, 1, 1)


def test_files_roll_over_by_size_and_chunk(tmp_path):
    lengths, h, w = (30, 30, 30, 30), 64, 64
    data = originals(lengths, h, w)
    features = {k: {**v, "shape": [h, w, 3]} if v["dtype"] in ("image", "video") else v for k, v in FEATURES.items()}
    root = write(tmp_path / "ds", data, lengths, features, video_files_size_in_mb=0.001, chunks_size=2)
    files = sorted(p.relative_to(root).as_posix() for p in (root / "videos" / VIDEO_A).rglob("*.mp4"))
    assert len(files) >= 3 and files[:3] == [f"videos/{VIDEO_A}/chunk-000/file-000.mp4",
                                             f"videos/{VIDEO_A}/chunk-000/file-001.mp4",
                                             f"videos/{VIDEO_A}/chunk-001/file-000.mp4"]
    assert not list(root.rglob("*.partial"))
    episodes = pq.read_table(root / EPISODES).to_pydict()
    assert 0.0 in episodes[f"videos/{VIDEO_A}/from_timestamp"][1:]  # a later episode opened a new file
    ds = LeRobotDataset(root, decode_ahead=False)
    got = np.stack([ds[i][VIDEO_A].numpy() for i in range(len(ds))])
    assert mean_abs(got, data[VIDEO_A]) < MEAN_ABS_TOLERANCE
    np.testing.assert_array_equal(nearest_original(got, data[VIDEO_A]), np.arange(len(ds)))


def test_decoding_ahead_fills_the_cache_before_any_request(written):
    root, _ = written
    ahead = LeRobotDataset(root)
    assert ahead.wait_for_decoding(timeout=60)
    assert all(ahead._decoded[k].all() for k in (VIDEO_A, VIDEO_B))

    lazy = LeRobotDataset(root, decode_ahead=False)
    assert not lazy._decoded[VIDEO_A].any()
    lazy[6]  # episode 1 (frames 5..11): decoded whole, for every video key; nothing else
    for key in (VIDEO_A, VIDEO_B):
        np.testing.assert_array_equal(np.flatnonzero(lazy._decoded[key]), np.arange(5, 12))
    copy = pickle.loads(pickle.dumps(lazy))  # DataLoader workers get a copy with their own locks
    assert copy[0][VIDEO_A].shape == (H, W, 3)


def test_missing_video_file_is_named_at_open(written, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(written[0], root)
    missing = root / f"videos/{VIDEO_B}/chunk-000/file-000.mp4"
    missing.unlink()
    with pytest.raises(DatasetError, match="video file of feature 'observation.images.wrist'.* is missing") as err:
        LeRobotDataset(root)
    assert str(missing) in str(err.value)


def _shift_from_timestamp(root, episode: int, by: float) -> None:
    table = pq.read_table(root / EPISODES)
    column = f"videos/{VIDEO_A}/from_timestamp"
    values = table.column(column).to_numpy().copy()
    values[episode] += by
    index = table.column_names.index(column)
    pq.write_table(table.set_column(index, column, [values]), root / EPISODES)


@pytest.mark.parametrize("decode_ahead", [False, True])
def test_timestamp_without_a_frame_is_an_error_naming_file_key_and_time(written, tmp_path, decode_ahead):
    root = tmp_path / "ds"
    shutil.copytree(written[0], root)
    _shift_from_timestamp(root, episode=1, by=0.03)  # between frames at 10 fps: 0.03 s from the nearest
    ds = LeRobotDataset(root, decode_ahead=decode_ahead)
    ds.wait_for_decoding(timeout=60)
    assert ds[0][VIDEO_A].shape == (H, W, 3)  # episode 0 is untouched
    with pytest.raises(DatasetError) as err:
        ds[5]
    message = str(err.value)
    assert str(root / f"videos/{VIDEO_A}/chunk-000/file-000.mp4") in message
    assert f"feature {VIDEO_A!r} at 0.530000 s" in message and "tolerance 0.0001 s" in message


def test_tolerance_is_a_parameter(written, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(written[0], root)
    _shift_from_timestamp(root, episode=1, by=0.003)
    with pytest.raises(DatasetError, match="no frame"):
        LeRobotDataset(root, decode_ahead=False)[5]
    assert LeRobotDataset(root, decode_ahead=False, tolerance_s=0.01)[5][VIDEO_A].shape == (H, W, 3)


def test_corrupt_video_file_is_named(written, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(written[0], root)
    path = root / f"videos/{VIDEO_A}/chunk-000/file-000.mp4"
    path.write_bytes(b"not an mp4 at all" * 10)
    ds = LeRobotDataset(root, decode_ahead=False)
    with pytest.raises(DatasetError, match="cannot decode") as err:
        ds[0]
    assert str(path) in str(err.value)


def test_episode_metadata_without_video_columns_is_refused(written, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(written[0], root)
    table = pq.read_table(root / EPISODES)
    pq.write_table(table.drop_columns([f"videos/{VIDEO_B}/from_timestamp"]), root / EPISODES)
    with pytest.raises(DatasetError, match=r"lacks columns \['videos/observation.images.wrist/from_timestamp'\]"):
        LeRobotDataset(root)


def test_video_shape_must_be_an_rgb_frame(tmp_path):
    bad = {**FEATURES, VIDEO_A: {"dtype": "video", "shape": [H, W, 4], "names": None}}
    with pytest.raises(ValueError, match=r"video shape must be \[height, width, 3\]"):
        LeRobotDatasetWriter(tmp_path / "ds", fps=FPS, robot_type="panda", features=bad)
    assert list(tmp_path.iterdir()) == []

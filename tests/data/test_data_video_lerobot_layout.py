"""Our reader on a video dataset laid out as lerobot 0.4.4 writes one, built here without vla.data's writer.

Everything is made by hand: info.json with lerobot's keys and video info, the task,
episode and data tables through pandas (as lerobot writes them), and the mp4 files
with PyAV the way lerobot makes them: one file per episode, then episodes joined
with FFmpeg's concat demuxer (stream copy), the later one starting where the
earlier one ends. One camera keeps both episodes in one file, the other has one
file per episode, so both the file lookup and the from_timestamp shift are tested.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.data.video_helpers import (
    MEAN_ABS_TOLERANCE,
    camera_frames,
    mean_abs,
    nearest_original,
    write_mp4_with_pyav,
)
from vla.data import DatasetError, LeRobotDataset

av = pytest.importorskip("av")
pd = pytest.importorskip("pandas")

FPS = 30  # not 10: timestamps k / 30 are not exact in binary, as on the Hub
H, W = 32, 48
LENGTHS = (9, 6)
FRONT, WRIST = "observation.images.front", "observation.images.wrist"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
TASK = "put the bowl on the plate"


def concat_mp4(parts: list[Path], out: Path) -> None:
    """Join mp4 files without re-encoding through FFmpeg's concat demuxer, as lerobot joins episodes."""
    listing = out.with_suffix(".ffconcat")
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file '{p.resolve()}'\n" for p in parts))
    with av.open(str(listing), format="concat", options={"safe": "0"}) as source, av.open(str(out), "w") as sink:
        stream_in = source.streams.video[0]
        stream_out = sink.add_stream_from_template(stream_in, opaque=True)
        stream_out.time_base = stream_in.time_base
        for packet in source.demux(stream_in):
            if packet.dts is None:
                continue
            packet.stream = stream_out
            sink.mux(packet)
    listing.unlink()


def video_info() -> dict:
    return {"video.height": H, "video.width": W, "video.codec": "av1", "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False, "video.fps": FPS, "video.channels": 3, "has_audio": False}


def frame_stats(frames: np.ndarray) -> dict:
    x = frames.astype(np.float64) / 255.0
    per_channel = lambda f: f(x, axis=(0, 1, 2)).reshape(3, 1, 1).tolist()  # noqa: E731
    return {"min": per_channel(np.min), "max": per_channel(np.max), "mean": per_channel(np.mean),
            "std": per_channel(np.std), "count": [len(frames)]}


def vector_stats(values: np.ndarray) -> dict:
    values = values.reshape(len(values), -1).astype(np.float64)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}


def build_lerobot_dataset(root: Path) -> dict[str, np.ndarray]:
    n = sum(LENGTHS)
    starts = np.concatenate([[0], np.cumsum(LENGTHS)[:-1]])
    rng = np.random.default_rng(3)
    frames = {FRONT: camera_frames(n, H, W, camera=0), WRIST: camera_frames(n, H, W, camera=1)}
    state = rng.normal(size=(n, 2)).astype(np.float32)
    action = rng.normal(size=(n, 2)).astype(np.float32)
    frame_index = np.concatenate([np.arange(k) for k in LENGTHS])
    episode_index = np.repeat(np.arange(len(LENGTHS)), LENGTHS)
    timestamp = (frame_index / FPS).astype(np.float32)
    for folder in ("data/chunk-000", "meta/episodes/chunk-000"):
        (root / folder).mkdir(parents=True)

    # Videos: one clip per episode, as lerobot encodes them.
    clips = root / "clips"
    for key in (FRONT, WRIST):
        for e, (s, k) in enumerate(zip(starts, LENGTHS, strict=True)):
            write_mp4_with_pyav(clips / f"{key}-{e}.mp4", frames[key][s : s + k], FPS)
    front = root / VIDEO_PATH.format(video_key=FRONT, chunk_index=0, file_index=0)
    front.parent.mkdir(parents=True)
    concat_mp4([clips / f"{FRONT}-{e}.mp4" for e in range(len(LENGTHS))], front)
    for e in range(len(LENGTHS)):
        wrist = root / VIDEO_PATH.format(video_key=WRIST, chunk_index=0, file_index=e)
        wrist.parent.mkdir(parents=True, exist_ok=True)
        (clips / f"{WRIST}-{e}.mp4").rename(wrist)
    for clip in clips.iterdir():
        clip.unlink()
    clips.rmdir()

    pd.DataFrame({
        "observation.state": list(state), "action": list(action), "timestamp": timestamp,
        "frame_index": frame_index, "episode_index": episode_index, "index": np.arange(n),
        "task_index": np.zeros(n, dtype=np.int64),
    }).to_parquet(root / "data/chunk-000/file-000.parquet")
    pd.DataFrame({"task_index": [0]}, index=[TASK]).to_parquet(root / "meta/tasks.parquet")

    ends = np.cumsum(LENGTHS)
    episodes = {
        "episode_index": list(range(len(LENGTHS))), "tasks": [[TASK]] * len(LENGTHS), "length": list(LENGTHS),
        "data/chunk_index": [0] * len(LENGTHS), "data/file_index": [0] * len(LENGTHS),
        "dataset_from_index": starts.tolist(), "dataset_to_index": ends.tolist(),
        f"videos/{FRONT}/chunk_index": [0, 0], f"videos/{FRONT}/file_index": [0, 0],
        f"videos/{FRONT}/from_timestamp": [0.0, LENGTHS[0] / FPS],
        f"videos/{FRONT}/to_timestamp": [LENGTHS[0] / FPS, n / FPS],
        f"videos/{WRIST}/chunk_index": [0, 0], f"videos/{WRIST}/file_index": [0, 1],
        f"videos/{WRIST}/from_timestamp": [0.0, 0.0],
        f"videos/{WRIST}/to_timestamp": [LENGTHS[0] / FPS, LENGTHS[1] / FPS],
        "meta/episodes/chunk_index": [0, 0], "meta/episodes/file_index": [0, 0],
    }
    pd.DataFrame(episodes).to_parquet(root / "meta/episodes/chunk-000/file-000.parquet")

    scalar = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": "v3.0", "robot_type": "so101_follower", "total_episodes": len(LENGTHS),
        "total_frames": n, "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200, "fps": FPS, "splits": {"train": f"0:{len(LENGTHS)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", "video_path": VIDEO_PATH,
        "features": {
            "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
            "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
            FRONT: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
                    "info": video_info()},
            WRIST: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
                    "info": video_info()},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": scalar, "episode_index": scalar, "index": scalar, "task_index": scalar,
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    columns = {"observation.state": state, "action": action, "timestamp": timestamp, "frame_index": frame_index,
               "episode_index": episode_index, "index": np.arange(n), "task_index": np.zeros(n)}
    stats = {k: vector_stats(v) for k, v in columns.items()}
    stats.update({key: frame_stats(frames[key]) for key in (FRONT, WRIST)})
    (root / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    return {**frames, "observation.state": state, "action": action}


@pytest.fixture(scope="module")
def lerobot_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot_layout") / "ds"
    return root, build_lerobot_dataset(root)


def test_concatenated_file_holds_both_episodes_back_to_back(lerobot_root):
    root, _ = lerobot_root
    with av.open(str(root / VIDEO_PATH.format(video_key=FRONT, chunk_index=0, file_index=0))) as c:
        times = [f.time for f in c.decode(video=0)]
    np.testing.assert_allclose(times, np.arange(sum(LENGTHS)) / FPS, atol=1e-6)


@pytest.mark.parametrize("decode_ahead", [True, False])
def test_reader_serves_each_row_its_frame(lerobot_root, decode_ahead):
    root, expected = lerobot_root
    ds = LeRobotDataset(root, action_horizon=4, decode_ahead=decode_ahead)
    assert ds.fps == FPS and ds.num_episodes == 2 and ds.camera_keys == [FRONT, WRIST]
    assert ds.tasks == [TASK]
    order = np.random.default_rng(0).permutation(len(ds))  # random access, as training reads
    items = {int(i): ds[int(i)] for i in order}
    for key in (FRONT, WRIST):
        got = np.stack([items[i][key].numpy() for i in range(len(ds))])
        assert got.shape == (len(ds), H, W, 3) and got.dtype == np.uint8
        assert mean_abs(got, expected[key]) < MEAN_ABS_TOLERANCE
        np.testing.assert_array_equal(nearest_original(got, expected[key]), np.arange(len(ds)))
    np.testing.assert_array_equal(np.stack([items[i]["observation.state"].numpy() for i in range(len(ds))]),
                                  expected["observation.state"])
    last_of_first = items[LENGTHS[0] - 1]
    assert last_of_first["action_is_pad"].tolist() == [False, True, True, True]


def test_file_shorter_than_its_metadata_is_an_error(lerobot_root, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(lerobot_root[0], root)
    table = pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    table.loc[1, f"videos/{WRIST}/from_timestamp"] = 5.0  # past the end of the 6-frame file
    table.loc[1, f"videos/{WRIST}/to_timestamp"] = 5.2
    table.to_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    ds = LeRobotDataset(root, decode_ahead=False)
    with pytest.raises(DatasetError, match="no frame of feature 'observation.images.wrist' between") as err:
        ds[LENGTHS[0]]
    assert str(root / VIDEO_PATH.format(video_key=WRIST, chunk_index=0, file_index=1)) in str(err.value)

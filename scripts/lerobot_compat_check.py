"""Check that lerobot itself reads a dataset written by vla.data, value for value.

Runs under a Python that has lerobot installed (scripts/check_lerobot_compat.sh
builds one), not under the project's environment. It imports nothing from vla:

    python scripts/lerobot_compat_check.py DATASET_ROOT EXPECTED.npz

EXPECTED.npz (written by tests/data/test_lerobot_compat.py, no pickled
objects) holds what every frame must contain. The check
1. opens DATASET_ROOT with lerobot.datasets.lerobot_dataset.LeRobotDataset,
   asking for action chunks through delta_timestamps, and compares every
   frame's images, state, action chunk, padding mask, task and indices;
2. writes a small dataset with lerobot's own writer from the same features
   and compares file schemas (parquet columns and types, info.json keys,
   stats keys) with ours.
It prints one JSON summary line and exits 1 on any difference.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local root must never touch the hub

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def compare_frames(root: Path, expected: dict[str, np.ndarray], problems: list[str]) -> int:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    fps = int(expected["fps"])
    horizon = int(expected["action_horizon"])
    ds = LeRobotDataset("local/vla_compat", root=root, delta_timestamps={"action": [k / fps for k in range(horizon)]})
    tasks = [str(t) for t in expected["tasks"]]
    cameras = [str(c) for c in expected["camera_keys"]]
    if ds.fps != fps:
        problems.append(f"fps: lerobot {ds.fps}, expected {fps}")
    if ds.num_frames != len(expected["episode_index"]):
        problems.append(f"num_frames: lerobot {ds.num_frames}, expected {len(expected['episode_index'])}")
    if ds.num_episodes != len(expected["episode_ranges"]):
        problems.append(f"num_episodes: lerobot {ds.num_episodes}, expected {len(expected['episode_ranges'])}")
    if list(ds.meta.tasks.index) != tasks:
        problems.append(f"tasks: lerobot {list(ds.meta.tasks.index)}, expected {tasks}")
    if list(ds.meta.camera_keys) != cameras:
        problems.append(f"camera keys: lerobot {ds.meta.camera_keys}, expected {cameras}")
    for e, (start, end) in enumerate(expected["episode_ranges"].tolist()):
        ep = ds.meta.episodes[e]
        if (ep["dataset_from_index"], ep["dataset_to_index"]) != (start, end):
            problems.append(f"episode {e}: lerobot range {ep['dataset_from_index']}..{ep['dataset_to_index']}")

    for i in range(ds.num_frames):
        item = ds[i]
        where = f"frame {i}"
        for cam in cameras:
            # lerobot returns float [3, H, W] in [0, 1]; ours is the uint8 [H, W, 3] it came from.
            img = (item[cam].numpy() * 255.0).round().astype(np.uint8).transpose(1, 2, 0)
            if not np.array_equal(img, expected[f"image.{cam}"][i]):
                problems.append(f"{where}: image {cam} differs")
        if not np.array_equal(item["observation.state"].numpy(), expected["observation.state"][i]):
            problems.append(f"{where}: observation.state differs")
        if not np.array_equal(item["action"].numpy(), expected["action"][i]):
            problems.append(f"{where}: action chunk differs")
        if not np.array_equal(item["action_is_pad"].numpy(), expected["action_is_pad"][i]):
            problems.append(f"{where}: action_is_pad differs")
        if item["task"] != tasks[int(expected["task_index"][i])]:
            problems.append(f"{where}: task {item['task']!r}")
        for key in ("episode_index", "frame_index", "index"):
            if int(item[key]) != int(expected[key][i]):
                problems.append(f"{where}: {key} lerobot {int(item[key])}, expected {int(expected[key][i])}")
        if abs(float(item["timestamp"]) - int(expected["frame_index"][i]) / fps) > 1e-6:
            problems.append(f"{where}: timestamp {float(item['timestamp'])}")
        if len(problems) > 20:
            problems.append("... stopping after 20 differences")
            break

    for name, ft in ds.meta.stats.items():
        shape = (3, 1, 1) if name in cameras else None
        for key, value in ft.items():
            if shape is not None and key != "count" and value.shape != shape:
                problems.append(f"stats {name}/{key}: shape {value.shape}, lerobot expects {shape}")
    return ds.num_frames


def write_reference(info: dict, out: Path) -> None:
    """A tiny dataset with the same user features, written by lerobot itself."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.datasets.utils import DEFAULT_FEATURES

    features = {k: {**v, "shape": tuple(v["shape"])} for k, v in info["features"].items() if k not in DEFAULT_FEATURES}
    ref = LeRobotDataset.create(
        "local/vla_reference",
        fps=info["fps"],
        features=features,
        root=out,
        robot_type=info["robot_type"],
        use_videos=False,
    )
    rng = np.random.default_rng(0)
    for episode in range(2):
        for _ in range(3):
            frame = {}
            for k, v in features.items():
                if v["dtype"] == "image":
                    frame[k] = rng.integers(0, 256, v["shape"], dtype=np.uint8)
                else:
                    frame[k] = rng.normal(size=v["shape"]).astype(v["dtype"])
            frame["task"] = f"reference task {episode}"
            ref.add_frame(frame)
        ref.save_episode()
    ref.finalize()


def _schema(path: Path) -> list[tuple[str, str]]:
    # pandas writes large_string or string depending on its version; both read the same.
    return [(f.name, str(f.type).replace("large_string", "string")) for f in pq.read_schema(path)]


def compare_schema(root: Path, problems: list[str]) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference"
        write_reference(info, ref)
        for rel in (
            "data/chunk-000/file-000.parquet",
            "meta/episodes/chunk-000/file-000.parquet",
            "meta/tasks.parquet",
        ):
            ours, theirs = _schema(root / rel), _schema(ref / rel)
            if ours != theirs:
                problems.append(
                    f"{rel}: columns differ: ours-only {[c for c in ours if c not in theirs]}, "
                    f"lerobot-only {[c for c in theirs if c not in ours]}"
                )
        ref_info = json.loads((ref / "meta/info.json").read_text())
        if list(info) != list(ref_info):
            problems.append(f"info.json keys: ours {list(info)}, lerobot {list(ref_info)}")
        if info["features"] != ref_info["features"]:
            problems.append("info.json features differ from lerobot's for the same input")
        ours_stats = json.loads((root / "meta/stats.json").read_text())
        ref_stats = json.loads((ref / "meta/stats.json").read_text())
        if sorted(ours_stats) != sorted(ref_stats):
            problems.append(f"stats features: ours {sorted(ours_stats)}, lerobot {sorted(ref_stats)}")
        for name in ref_stats:
            if name in ours_stats and list(ours_stats[name]) != list(ref_stats[name]):
                problems.append(f"stats keys of {name}: ours {list(ours_stats[name])}, lerobot {list(ref_stats[name])}")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, expected_path = Path(argv[1]), Path(argv[2])
    with np.load(expected_path, allow_pickle=False) as npz:
        expected = {k: npz[k] for k in npz.files}
    import lerobot

    problems: list[str] = []
    frames = compare_frames(root, expected, problems)
    compare_schema(root, problems)
    summary = {
        "lerobot_version": getattr(lerobot, "__version__", "unknown"),
        "frames_checked": frames,
        "ok": not problems,
        "problems": problems,
    }
    print(json.dumps(summary))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

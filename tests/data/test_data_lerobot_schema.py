"""Our files against the LeRobotDataset v3.0 schema of lerobot 0.4.4.

The expected values below were read from lerobot 0.4.4's source
(lerobot/datasets/utils.py, lerobot_dataset.py, compute_stats.py) and checked
against a dataset that lerobot 0.4.4 itself wrote for the same features
(scripts/lerobot_compat_check.py does that comparison live when lerobot is
installed). This test needs no lerobot.
"""

import json

import pyarrow.parquet as pq
import pytest

from tests.data.helpers import FEATURES, random_episodes, write_dataset

STANDARD = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
INFO_KEYS = [
    "codebase_version",
    "robot_type",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "chunks_size",
    "data_files_size_in_mb",
    "video_files_size_in_mb",
    "fps",
    "splits",
    "data_path",
    "video_path",
    "features",
]
STAT_KEYS = ["min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"]
IMAGE = "struct<bytes: binary, path: string>"
DATA_COLUMNS = [
    ("observation.images.agentview", IMAGE),
    ("observation.images.wrist", IMAGE),
    ("observation.state", "fixed_size_list<element: float>[8]"),
    ("action", "fixed_size_list<element: float>[7]"),
    ("timestamp", "float"),
    ("frame_index", "int64"),
    ("episode_index", "int64"),
    ("index", "int64"),
    ("task_index", "int64"),
]
HF_FEATURES = {
    "observation.images.agentview": {"_type": "Image"},
    "observation.images.wrist": {"_type": "Image"},
    "observation.state": {"feature": {"dtype": "float32", "_type": "Value"}, "length": 8, "_type": "List"},
    "action": {"feature": {"dtype": "float32", "_type": "Value"}, "length": 7, "_type": "List"},
    "timestamp": {"dtype": "float32", "_type": "Value"},
    "frame_index": {"dtype": "int64", "_type": "Value"},
    "episode_index": {"dtype": "int64", "_type": "Value"},
    "index": {"dtype": "int64", "_type": "Value"},
    "task_index": {"dtype": "int64", "_type": "Value"},
}


def lerobot_stats_column_type(feature: str, stat: str) -> str:
    """Per-episode stats columns: numpy arrays turned to lists, types inferred by pyarrow."""
    if stat == "count":
        return "list<element: int64>"
    if feature.startswith("observation.images."):
        return "list<element: list<element: list<element: double>>>"  # shape (3, 1, 1)
    if stat in ("min", "max") and STANDARD.get(feature, {}).get("dtype") == "int64":
        return "list<element: int64>"
    return "list<element: double>"


def expected_episode_columns() -> list[tuple[str, str]]:
    cols = [
        ("episode_index", "int64"),
        ("tasks", "list<element: string>"),
        ("length", "int64"),
        ("data/chunk_index", "int64"),
        ("data/file_index", "int64"),
        ("dataset_from_index", "int64"),
        ("dataset_to_index", "int64"),
    ]
    for feature in [*FEATURES, *STANDARD]:
        cols += [(f"stats/{feature}/{s}", lerobot_stats_column_type(feature, s)) for s in STAT_KEYS]
    return cols + [("meta/episodes/chunk_index", "int64"), ("meta/episodes/file_index", "int64")]


def columns(path) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in pq.read_schema(path)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("schema") / "ds", random_episodes(seed=8, lengths=(3, 2)), fps=10)


def test_file_layout(root):
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [
        "data/chunk-000/file-000.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
    ]


def test_info_json(root):
    info = json.loads((root / "meta/info.json").read_text())
    assert list(info) == INFO_KEYS
    assert info["codebase_version"] == "v3.0"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] is None
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 200)
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["fps"]) == (2, 5, 2, 10)
    assert info["splits"] == {"train": "0:2"}
    assert info["robot_type"] == "panda"
    assert info["features"] == {**FEATURES, **STANDARD}


def test_data_parquet(root):
    path = root / "data/chunk-000/file-000.parquet"
    assert columns(path) == DATA_COLUMNS
    meta = json.loads(pq.read_schema(path).metadata[b"huggingface"])
    assert meta["info"]["features"] == HF_FEATURES
    image = pq.read_table(path).column("observation.images.wrist")[0].as_py()
    assert image["bytes"][:8] == b"\x89PNG\r\n\x1a\n"


def test_episodes_parquet(root):
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    assert columns(path) == expected_episode_columns()
    rows = pq.read_table(path).to_pylist()
    assert [(r["episode_index"], r["length"], r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [
        (0, 3, 0, 3),
        (1, 2, 3, 5),
    ]


def test_tasks_parquet(root):
    path = root / "meta/tasks.parquet"
    assert columns(path) == [("task_index", "int64"), ("__index_level_0__", "string")]
    pandas_meta = json.loads(pq.read_schema(path).metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["__index_level_0__"]


def test_tasks_parquet_reads_back_in_pandas_as_lerobot_does(root):
    pd = pytest.importorskip("pandas")
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert list(tasks.index) == ["pick up the red cube", "open the drawer"]
    assert int(tasks.loc["open the drawer"].task_index) == 1
    assert tasks.iloc[0].name == "pick up the red cube"


def test_stats_json(root):
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == {*FEATURES, *STANDARD}
    for feature, values in stats.items():
        assert list(values) == STAT_KEYS, feature
        assert len(values["count"]) == 1
    for key in STAT_KEYS:
        if key != "count":
            assert len(stats["observation.images.agentview"][key]) == 3
            assert all(len(c) == 1 and len(c[0]) == 1 for c in stats["observation.images.agentview"][key])
    assert len(stats["action"]["mean"]) == 7 and len(stats["timestamp"]["mean"]) == 1

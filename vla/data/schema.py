"""The LeRobotDataset v3.0 layout: paths, standard columns, column types.

Learned from lerobot 0.4.4 (lerobot/datasets/utils.py, lerobot_dataset.py):
- meta/info.json describes everything; `data_path` is a format template with
  chunk_index and file_index; a chunk folder holds up to `chunks_size` files
  and a data file grows to about `data_files_size_in_mb` before a new one starts.
- Every frame row carries five standard columns besides the user's features.
- A feature of shape [1] is a plain scalar column; a 1-D feature is a
  fixed-size list column; an image is a struct {bytes: PNG, path} column
  (Hugging Face datasets' Image type), so images live inside the parquet.
- A video feature has no parquet column: its frames live in mp4 files at
  `video_path` (formatted with video_key, chunk_index, file_index), several
  episodes one after another in a file; the episode metadata says which file
  and where in it (videos/<key>/from_timestamp .. to_timestamp, in seconds).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_FILES_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILES_SIZE_IN_MB = 200

INFO_PATH = "meta/info.json"
# An extra info.json key (lerobot ignores it) recording how `vla collect` made the data: the camera
# image convention and, for LIBERO, where episodes started (docs/LIBERO.md). Absent in older datasets.
PROVENANCE_KEY = "vla_provenance"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DATA_DIR = "data"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH_TEMPLATE = f"{DATA_DIR}/{CHUNK_FILE}.parquet"
VIDEO_DIR = "videos"
VIDEO_PATH_TEMPLATE = VIDEO_DIR + "/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH_TEMPLATE = f"{EPISODES_DIR}/{CHUNK_FILE}.parquet"

# Added to every frame by the writer, in this order, after the user's features.
STANDARD_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}

# Keys of meta/info.json, in lerobot's order.
INFO_KEYS: tuple[str, ...] = (
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
)

# Columns of meta/episodes/*.parquet that are not per-feature stats, in lerobot's order.
EPISODE_COLUMNS: tuple[str, ...] = (
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
)
EPISODE_META_COLUMNS: tuple[str, ...] = ("meta/episodes/chunk_index", "meta/episodes/file_index")

# The column pandas uses for an unnamed index; lerobot keeps tasks as the index
# of a DataFrame with one column, task_index, and reads it back with pandas.
TASKS_INDEX_COLUMN = "__index_level_0__"

NUMERIC_DTYPES: dict[str, pa.DataType] = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
}
IMAGE_DTYPE = "image"
VIDEO_DTYPE = "video"
# Features whose values are uint8 [H, W, 3] frames, whichever way they are stored.
FRAME_DTYPES = (IMAGE_DTYPE, VIDEO_DTYPE)
# lerobot's tolerance between a frame's timestamp and the video frame that serves it (seconds).
VIDEO_TOLERANCE_S = 1e-4
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGE_NAMES = ["height", "width", "channels"]
RESERVED_NAMES = frozenset(STANDARD_FEATURES) | {"task"}


def validate_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Check user features and return a normalised copy (shapes as lists of int).

    Supported: images uint8 [H, W, 3] stored as PNG ('image') or in mp4 files
    ('video'), and numeric features of shape [D] (shape [1] is a scalar column).
    """
    if not isinstance(features, Mapping) or not features:
        raise ValueError("features must be a non-empty dict of name -> {dtype, shape, names}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in features.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"feature names must be non-empty strings, got {name!r}")
        if "/" in name:
            raise ValueError(f"feature {name!r}: names may not contain '/' (it separates stats columns)")
        if name in RESERVED_NAMES:
            raise ValueError(f"feature {name!r} is reserved: the writer adds it to every frame")
        if not isinstance(spec, Mapping) or "dtype" not in spec or "shape" not in spec:
            raise ValueError(f"feature {name!r}: spec must be a dict with 'dtype' and 'shape', got {spec!r}")
        dtype = spec["dtype"]
        try:
            shape = [int(d) for d in spec["shape"]]
        except (TypeError, ValueError) as err:
            raise ValueError(f"feature {name!r}: shape must be a list of ints, got {spec['shape']!r}") from err
        if any(d <= 0 for d in shape):
            raise ValueError(f"feature {name!r}: shape dimensions must be positive, got {shape}")
        names = copy.deepcopy(spec.get("names"))
        if dtype in FRAME_DTYPES:
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"feature {name!r}: {dtype} shape must be [height, width, 3], got {shape}")
            names = names if names is not None else list(IMAGE_NAMES)
        elif dtype in NUMERIC_DTYPES:
            if len(shape) != 1:
                raise ValueError(f"feature {name!r}: numeric features must be 1-D ([D]), got shape {shape}")
        else:
            raise ValueError(
                f"feature {name!r}: unsupported dtype {dtype!r}; use 'image', 'video' or one of {sorted(NUMERIC_DTYPES)}"
            )
        if names is not None and not isinstance(names, (list, dict)):
            raise ValueError(f"feature {name!r}: names must be a list, a dict or None, got {names!r}")
        if isinstance(names, list) and dtype not in FRAME_DTYPES and len(names) != shape[0]:
            raise ValueError(f"feature {name!r}: {len(names)} names for shape {shape}")
        out[name] = {"dtype": dtype, "shape": shape, "names": names}
    return out


def is_scalar(feature: Mapping[str, Any]) -> bool:
    return feature["dtype"] not in FRAME_DTYPES and list(feature["shape"]) == [1]


def parquet_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The features that have a column in the data files: all but videos (those live in mp4 files)."""
    return {name: ft for name, ft in features.items() if ft["dtype"] != VIDEO_DTYPE}


def video_episode_columns(video_key: str) -> tuple[str, str, str, str]:
    """The episode metadata columns that locate one episode of a video feature, in lerobot's order."""
    prefix = f"{VIDEO_DIR}/{video_key}/"
    return (f"{prefix}chunk_index", f"{prefix}file_index", f"{prefix}from_timestamp", f"{prefix}to_timestamp")


def arrow_type(feature: Mapping[str, Any]) -> pa.DataType:
    """The parquet column type lerobot (through HF datasets) uses for a feature."""
    if feature["dtype"] == IMAGE_DTYPE:
        return IMAGE_STRUCT
    value = NUMERIC_DTYPES[feature["dtype"]]
    if is_scalar(feature):
        return value
    return pa.list_(value, int(feature["shape"][0]))


def hf_feature(feature: Mapping[str, Any]) -> dict[str, Any]:
    """The feature as HF datasets serialises it in a parquet file's schema metadata."""
    if feature["dtype"] == IMAGE_DTYPE:
        return {"_type": "Image"}
    value = {"dtype": feature["dtype"], "_type": "Value"}
    if is_scalar(feature):
        return value
    return {"feature": value, "length": int(feature["shape"][0]), "_type": "List"}


def data_schema(features: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """Arrow schema of a data file, with the HF metadata that makes datasets decode images."""
    features = parquet_features(features)
    fields = [pa.field(name, arrow_type(ft)) for name, ft in features.items()]
    hf_meta = {"info": {"features": {name: hf_feature(ft) for name, ft in features.items()}}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(hf_meta)})


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk folder holds chunks_size files."""
    if file_index >= chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1

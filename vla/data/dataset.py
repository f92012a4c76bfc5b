"""Read a LeRobotDataset v3.0 from disk as a torch Dataset of action chunks.

The whole dataset is loaded into memory on open (our datasets are tens of
episodes of small images); PNGs are decoded on first access and cached, so
__getitem__ is a few array slices. Video features (mp4, as most Hub datasets
store cameras) are decoded a whole episode at a time into the same cache, by
a background thread ahead of the requests (vla/data/video_frames.py): decoded,
every camera costs H x W x 3 bytes per frame of memory either way.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image

from vla.data.errors import DatasetError
from vla.data.metadata import read_tasks
from vla.data.schema import (
    CODEBASE_VERSION,
    DATA_DIR,
    EPISODES_DIR,
    IMAGE_DTYPE,
    INFO_PATH,
    NUMERIC_DTYPES,
    PROVENANCE_KEY,
    STANDARD_FEATURES,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_DTYPE,
    VIDEO_TOLERANCE_S,
    parquet_features,
    video_episode_columns,
)
from vla.data.stats import FeatureStats, stats_from_json
from vla.data.video_frames import EpisodeVideoFrames

_REQUIRED_INFO_KEYS = ("codebase_version", "fps", "features", "total_frames", "total_episodes", "data_path")
_REQUIRED_EPISODE_COLUMNS = (
    "episode_index",
    "dataset_from_index",
    "dataset_to_index",
    "data/chunk_index",
    "data/file_index",
)
# Returned as float32 whatever the file stores: the policy normalises in float32.
_FLOAT32_KEYS = ("observation.state", "observation.environment_state", "action")
# Given future_offsets, these come as the frames ahead too by default (latent-reasoning warm-up targets).
_FUTURE_KEYS = ("observation.state", "observation.environment_state")


class LeRobotDataset(torch.utils.data.Dataset):
    """Frames of a LeRobotDataset v3.0, each with the chunk of actions that follows it.

    item = {
        "observation.images.<cam>": uint8 [H, W, 3],
        "observation.state": float32 [D],
        "action": float32 [action_horizon, A]  (frames i .. i+H-1 of the same
            episode; past the episode's end the last action is repeated),
        "action_is_pad": bool [action_horizon]  (True where repeated),
        "task": str, "episode_index": int, "frame_index": int,
        plus any other feature of the dataset as a tensor of frame i.
    }
    With future_offsets (k_1, ..., k_n), frames ahead, for latent-reasoning warm-up targets: also
        "future.<key>" for each of future_keys the dataset has (default: observation.state and
        observation.environment_state; a camera key gives uint8 [n, H, W, 3]): frames i + k_j of the
        same episode, [n, ...] (past its end the last frame repeats),
        "future_is_pad": bool [n] (True where repeated).
    Image and video features give the same item (uint8 [H, W, 3]). Video frames
    are the frames shown at from_timestamp + timestamp, within tolerance_s;
    decode_ahead starts a thread that decodes every episode's video at once.
    Raises DatasetError (a ValueError) naming the path when the dataset is
    missing, malformed or inconsistent.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        action_horizon: int = 1,
        decode_ahead: bool = True,
        tolerance_s: float = VIDEO_TOLERANCE_S,
        future_offsets: list[int] | tuple[int, ...] = (),
        future_keys: list[str] | tuple[str, ...] = _FUTURE_KEYS,
    ):
        if isinstance(action_horizon, bool) or not isinstance(action_horizon, (int, np.integer)) or action_horizon < 1:
            raise ValueError(f"action_horizon must be an int >= 1, got {action_horizon!r}")
        if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in future_offsets):
            raise ValueError(f"future_offsets must be frames ahead, ints >= 1, got {list(future_offsets)!r}")
        self.future_offsets = np.asarray(future_offsets, dtype=np.int64)
        self.future_keys = tuple(future_keys)
        if not tolerance_s > 0:
            raise ValueError(f"tolerance_s must be positive, got {tolerance_s!r}")
        self.root = Path(root)
        self.action_horizon = int(action_horizon)
        self.tolerance_s = float(tolerance_s)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset directory does not exist")
        self.info = self._load_info()
        self._features: dict[str, dict[str, Any]] = self.info["features"]
        self._tasks = self._load_tasks()
        self._stats = self._load_stats()
        episodes = self._load_episodes()
        table = self._load_data(episodes)
        self._check_frames(table, episodes)
        self._check_stats_cover_features()
        self._episode_ranges = [
            (int(a), int(b)) for a, b in zip(episodes["dataset_from_index"], episodes["dataset_to_index"], strict=True)
        ]
        self._unpack(table)
        self._videos = self._open_videos(episodes)
        if decode_ahead:
            self._videos.start_ahead()

    # -- loading and validation ---------------------------------------------

    def _fail(self, relative: str, reason: str) -> DatasetError:
        return DatasetError(f"{self.root / relative}: {reason}")

    def _load_info(self) -> dict[str, Any]:
        path = self.root / INFO_PATH
        if not path.is_file():
            raise self._fail(INFO_PATH, "missing (not a LeRobot dataset, or an unfinished write)")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise self._fail(INFO_PATH, f"not valid JSON ({err})") from err
        if not isinstance(info, dict):
            raise self._fail(INFO_PATH, f"expected a JSON object, got {type(info).__name__}")
        missing = [k for k in _REQUIRED_INFO_KEYS if k not in info]
        if missing:
            raise self._fail(INFO_PATH, f"missing keys {missing}")
        if info["codebase_version"] != CODEBASE_VERSION:
            raise self._fail(
                INFO_PATH, f"codebase_version is {info['codebase_version']!r}; only {CODEBASE_VERSION!r} is supported"
            )
        features = info["features"]
        if not isinstance(features, dict) or not features:
            raise self._fail(INFO_PATH, "'features' must be a non-empty object")
        for name, ft in features.items():
            if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
                raise self._fail(INFO_PATH, f"feature {name!r} needs 'dtype' and 'shape'")
            if ft["dtype"] not in (IMAGE_DTYPE, VIDEO_DTYPE, "string") and ft["dtype"] not in NUMERIC_DTYPES:
                raise self._fail(INFO_PATH, f"feature {name!r} has unsupported dtype {ft['dtype']!r}")
            ft["shape"] = [int(d) for d in ft["shape"]]
            if ft["dtype"] == VIDEO_DTYPE:
                if len(ft["shape"]) != 3 or ft["shape"][2] != 3:
                    raise self._fail(INFO_PATH, f"video feature {name!r}: shape must be [height, width, 3], got "
                                     f"{ft['shape']}")
                if not isinstance(info.get("video_path"), str) or "{video_key}" not in info["video_path"]:
                    raise self._fail(INFO_PATH, f"video feature {name!r}, but 'video_path' is "
                                     f"{info.get('video_path')!r} (a template with {{video_key}}, {{chunk_index}}, "
                                     "{file_index} is needed)")
        for name in STANDARD_FEATURES:
            if name not in features:
                raise self._fail(INFO_PATH, f"standard feature {name!r} is not listed in 'features'")
        if not isinstance(info["fps"], (int, float)) or info["fps"] <= 0:
            raise self._fail(INFO_PATH, f"fps must be positive, got {info['fps']!r}")
        if not isinstance(info.get(PROVENANCE_KEY, {}), dict):
            raise self._fail(INFO_PATH, f"{PROVENANCE_KEY!r} must be an object, got {info[PROVENANCE_KEY]!r}")
        return info

    def _load_tasks(self) -> list[str]:
        path = self.root / TASKS_PATH
        if not path.is_file():
            raise self._fail(TASKS_PATH, "missing")
        try:
            return read_tasks(path)
        except (OSError, pa.ArrowException, ValueError) as err:
            raise self._fail(TASKS_PATH, f"unreadable task table ({err})") from err

    def _load_stats(self) -> dict[str, FeatureStats]:
        path = self.root / STATS_PATH
        if not path.is_file():
            raise self._fail(STATS_PATH, "missing (a dataset without normalisation stats cannot be trained on)")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(payload, dict):
                raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
            return stats_from_json(payload)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise self._fail(STATS_PATH, f"unreadable ({err})") from err

    def _check_stats_cover_features(self) -> None:
        # Normalisation needs these for every numeric and image feature.
        needed = ("min", "max", "mean", "std")
        for name, ft in self._features.items():
            if ft["dtype"] == "string":
                continue
            missing = [k for k in needed if k not in self._stats.get(name, {})]
            if missing:
                raise self._fail(STATS_PATH, f"no {missing} statistics for feature {name!r}")

    def _read_parquet(self, path: Path, what: str) -> pa.Table:
        try:
            return pq.read_table(path)
        except (OSError, pa.ArrowException) as err:
            raise DatasetError(f"{path}: unreadable {what} file ({err})") from err

    def _load_episodes(self) -> dict[str, np.ndarray]:
        paths = sorted((self.root / EPISODES_DIR).glob("*/*.parquet"))
        if not paths:
            raise self._fail(EPISODES_DIR, "no episode metadata files (expected chunk-XXX/file-XXX.parquet)")
        video_columns = [c for key in self.video_keys for c in video_episode_columns(key)]
        tables = []
        for path in paths:
            table = self._read_parquet(path, "episode metadata")
            missing = [c for c in (*_REQUIRED_EPISODE_COLUMNS, *video_columns) if c not in table.column_names]
            if missing:
                raise DatasetError(f"{path}: episode metadata lacks columns {missing}")
            tables.append(table.select([*_REQUIRED_EPISODE_COLUMNS, *video_columns]))
        merged = pa.concat_tables(tables)
        episodes = {c: merged.column(c).to_numpy().astype(np.int64) for c in _REQUIRED_EPISODE_COLUMNS}
        for c in video_columns:  # timestamps are seconds, the rest indices
            if merged.column(c).null_count:
                raise self._fail(EPISODES_DIR, f"column {c!r} has missing values")
            episodes[c] = merged.column(c).to_numpy().astype(np.float64 if c.endswith("_timestamp") else np.int64)
        order = np.argsort(episodes["episode_index"], kind="stable")
        episodes = {c: v[order] for c, v in episodes.items()}
        n = len(order)
        if n != self.info["total_episodes"]:
            raise self._fail(
                EPISODES_DIR, f"{n} episodes listed, info.json says total_episodes={self.info['total_episodes']}"
            )
        if not np.array_equal(episodes["episode_index"], np.arange(n)):
            raise self._fail(EPISODES_DIR, "episode_index values must be 0..N-1 without gaps or repeats")
        starts, ends = episodes["dataset_from_index"], episodes["dataset_to_index"]
        expected_starts = np.concatenate([[0], ends[:-1]])
        if np.any(ends <= starts) or not np.array_equal(starts, expected_starts):
            raise self._fail(EPISODES_DIR, "episode frame ranges must be non-empty and contiguous from 0")
        return episodes

    def _load_data(self, episodes: dict[str, np.ndarray]) -> pa.Table:
        template = self.info["data_path"]
        referenced = sorted(
            set(zip(episodes["data/chunk_index"].tolist(), episodes["data/file_index"].tolist(), strict=True))
        )
        for chunk, file in referenced:
            relative = template.format(chunk_index=chunk, file_index=file)
            if not (self.root / relative).is_file():
                raise self._fail(relative, "data file listed in the episode metadata is missing")
        # Like lerobot, rows come from every data file in path order.
        paths = sorted((self.root / DATA_DIR).glob("*/*.parquet"))
        tables = [self._read_parquet(path, "data") for path in paths]
        try:
            return pa.concat_tables(tables, promote_options="default")
        except pa.ArrowException as err:
            raise self._fail(DATA_DIR, f"data files have incompatible schemas ({err})") from err

    def _check_frames(self, table: pa.Table, episodes: dict[str, np.ndarray]) -> None:
        total = self.info["total_frames"]
        if table.num_rows != total:
            raise self._fail(DATA_DIR, f"{table.num_rows} rows in the data files, info.json says total_frames={total}")
        missing = [name for name in parquet_features(self._features) if name not in table.column_names]
        if missing:
            raise self._fail(DATA_DIR, f"features listed in info.json are missing from the data: {missing}")
        if int(episodes["dataset_to_index"][-1]) != total:
            raise self._fail(
                EPISODES_DIR, f"episodes cover {int(episodes['dataset_to_index'][-1])} frames, total_frames={total}"
            )
        index = table.column("index").to_numpy()
        if not np.array_equal(index, np.arange(total)):
            raise self._fail(DATA_DIR, "the 'index' column must run 0..total_frames-1 in file order")
        lengths = episodes["dataset_to_index"] - episodes["dataset_from_index"]
        expected_episode = np.repeat(episodes["episode_index"], lengths)
        if not np.array_equal(table.column("episode_index").to_numpy(), expected_episode):
            raise self._fail(DATA_DIR, "the episode_index column disagrees with the episode frame ranges")
        task_index = table.column("task_index").to_numpy()
        if task_index.size and (task_index.min() < 0 or task_index.max() >= len(self._tasks)):
            raise self._fail(DATA_DIR, f"task_index out of range for {len(self._tasks)} tasks")

    def _unpack(self, table: pa.Table) -> None:
        n = table.num_rows
        self._columns: dict[str, np.ndarray] = {}
        self._png: dict[str, list[bytes | None]] = {}
        self._png_paths: dict[str, list[str | None]] = {}
        self._image_cache: dict[str, np.ndarray] = {}
        self._decoded: dict[str, np.ndarray] = {}
        for name, ft in self._features.items():
            if ft["dtype"] == VIDEO_DTYPE:  # no column: decoded from the mp4 files on demand
                self._image_cache[name] = np.empty((n, *ft["shape"]), dtype=np.uint8)
                self._decoded[name] = np.zeros(n, dtype=bool)
                continue
            column = table.column(name).combine_chunks()
            if ft["dtype"] == IMAGE_DTYPE:
                if not pa.types.is_struct(column.type):
                    raise self._fail(DATA_DIR, f"image feature {name!r} is not a struct column ({column.type})")
                self._png[name] = column.field("bytes").to_pylist()
                self._png_paths[name] = column.field("path").to_pylist()
                h, w, c = ft["shape"]
                self._image_cache[name] = np.empty((n, h, w, c), dtype=np.uint8)
                self._decoded[name] = np.zeros(n, dtype=bool)
            elif ft["dtype"] == "string":
                self._columns[name] = np.array(column.to_pylist(), dtype=object)
            else:
                self._columns[name] = self._numeric(name, column, ft, n)
        self._task_index = self._columns["task_index"].reshape(n)
        self._episode_index = self._columns["episode_index"].reshape(n)
        self._frame_index = self._columns["frame_index"].reshape(n)
        # Frame -> one past the last frame of its episode, for action chunks.
        ends = np.array([b for _, b in self._episode_ranges], dtype=np.int64)
        self._episode_end = ends[self._episode_index]
        self._vector_keys = [k for k in self._columns if k not in STANDARD_FEATURES and k != "action"]

    def _open_videos(self, episodes: dict[str, np.ndarray]) -> EpisodeVideoFrames:
        """Check every video file the episodes name exists; the frames are decoded later."""
        template = self.info.get("video_path")
        spans: dict[str, np.ndarray] = {}
        files: dict[str, list[Path]] = {}
        for key in self.video_keys:
            chunk_col, file_col, from_col, to_col = video_episode_columns(key)
            spans[key] = np.stack([episodes[from_col], episodes[to_col]], axis=1)
            if np.any(spans[key][:, 0] < 0) or np.any(spans[key][:, 1] < spans[key][:, 0]):
                raise self._fail(EPISODES_DIR, f"{key!r}: from_timestamp/to_timestamp must satisfy 0 <= from <= to")
            try:
                files[key] = [
                    self.root / template.format(video_key=key, chunk_index=int(c), file_index=int(f))
                    for c, f in zip(episodes[chunk_col], episodes[file_col], strict=True)
                ]
            except (KeyError, IndexError, ValueError) as err:
                raise self._fail(INFO_PATH, f"video_path {template!r} cannot be formatted ({err!r})") from err
            for path in sorted(set(files[key])):
                if not path.is_file():
                    raise DatasetError(f"{path}: video file of feature {key!r} listed in the episode metadata is missing")
        timestamps = self._columns["timestamp"].reshape(-1).astype(np.float64)
        return EpisodeVideoFrames(
            self.video_keys,
            cache={k: self._image_cache[k] for k in self.video_keys},
            decoded={k: self._decoded[k] for k in self.video_keys},
            files=files,
            spans=spans,
            timestamps=timestamps,
            ranges=self._episode_ranges,
            tolerance_s=self.tolerance_s,
        )

    def _numeric(self, name: str, column: pa.Array, ft: dict[str, Any], n: int) -> np.ndarray:
        shape = ft["shape"]
        if (
            pa.types.is_list(column.type)
            or pa.types.is_fixed_size_list(column.type)
            or pa.types.is_large_list(column.type)
        ):
            values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        else:
            values = column.to_numpy(zero_copy_only=False)
        if values.size != n * int(np.prod(shape)):
            raise self._fail(DATA_DIR, f"feature {name!r} holds {values.size} values, expected {n} x {shape}")
        dtype = np.float32 if name in _FLOAT32_KEYS else np.dtype(ft["dtype"])
        array = values.reshape(n, *shape).astype(dtype, copy=False)
        return np.ascontiguousarray(array)

    # -- public properties ---------------------------------------------------

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def provenance(self) -> dict[str, Any]:
        """How `vla collect` made the data (image convention, LIBERO initial states); {} if not recorded."""
        return dict(self.info.get(PROVENANCE_KEY, {}))

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self._features

    @property
    def stats(self) -> dict[str, FeatureStats]:
        return self._stats

    @property
    def num_episodes(self) -> int:
        return len(self._episode_ranges)

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    @property
    def camera_keys(self) -> list[str]:
        """Image and video features alike: both give uint8 [H, W, 3] frames."""
        return [k for k, ft in self._features.items() if ft["dtype"] in (IMAGE_DTYPE, VIDEO_DTYPE)]

    @property
    def video_keys(self) -> list[str]:
        return [k for k, ft in self._features.items() if ft["dtype"] == VIDEO_DTYPE]

    def wait_for_decoding(self, timeout: float | None = None) -> bool:
        """Block until the video frames decoded ahead are all in memory; True if so (always without video)."""
        return self._videos.wait(timeout)

    def close(self) -> None:
        """Stop decoding ahead (the frames decoded so far stay usable)."""
        self._videos.stop()

    @property
    def episode_ranges(self) -> list[tuple[int, int]]:
        """(first frame, one past the last frame) of each episode, by episode_index."""
        return list(self._episode_ranges)

    # -- access --------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_frames

    def image(self, key: str, index: int) -> np.ndarray:
        """The decoded uint8 [H, W, 3] image of one frame (cached; do not modify)."""
        if not self._decoded[key][index]:
            if self._features[key]["dtype"] == VIDEO_DTYPE:
                self._videos.ensure(int(self._episode_index[index]))  # the whole episode, every video key
            else:
                self._image_cache[key][index] = self._decode(key, index)
                self._decoded[key][index] = True
        return self._image_cache[key][index]

    def _decode(self, key: str, index: int) -> np.ndarray:
        data = self._png[key][index]
        source = f"frame {index} of {key!r}"
        if data is None:
            path = self._png_paths[key][index]
            if path is None:
                raise self._fail(DATA_DIR, f"{source} has neither image bytes nor a path")
            data = (self.root / path).read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as err:
            raise self._fail(DATA_DIR, f"{source}: undecodable image ({err})") from err
        if array.shape != self._image_cache[key].shape[1:]:
            raise self._fail(
                DATA_DIR, f"{source}: image shape {array.shape}, info.json says {self._features[key]['shape']}"
            )
        return array

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = self.num_frames
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} frames")
        item: dict[str, Any] = {}
        for key in self._image_cache:
            item[key] = torch.from_numpy(self.image(key, i).copy())
        for key in self._vector_keys:
            value = self._columns[key][i]
            item[key] = value if isinstance(value, str) else torch.from_numpy(np.array(value))
        if "action" in self._columns:
            steps = np.arange(i, i + self.action_horizon)
            end = self._episode_end[i]
            item["action"] = torch.from_numpy(self._columns["action"][np.minimum(steps, end - 1)])
            item["action_is_pad"] = torch.from_numpy(steps >= end)
        if self.future_offsets.size:
            steps = i + self.future_offsets
            end = self._episode_end[i]
            frames = np.minimum(steps, end - 1)
            for key in self.future_keys:
                if key in self._columns:
                    item["future." + key] = torch.from_numpy(self._columns[key][frames])
                elif key in self._image_cache:
                    item["future." + key] = torch.from_numpy(np.stack([self.image(key, int(j)) for j in frames]))
            item["future_is_pad"] = torch.from_numpy(steps >= end)
        item["task"] = self._tasks[self._task_index[i]]
        item["episode_index"] = int(self._episode_index[i])
        item["frame_index"] = int(self._frame_index[i])
        return item

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset({str(self.root)!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
            f"tasks={len(self._tasks)}, cameras={self.camera_keys}, action_horizon={self.action_horizon})"
        )

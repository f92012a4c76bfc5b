"""Write a LeRobotDataset v3.0 frame by frame: images as PNG inside parquet, videos as mp4.

A feature declared with dtype 'video' (`vla collect --dataset.video=true`) is
encoded into mp4 files as lerobot 0.4.4 writes them (vla/data/video.py), with
the same episode metadata and info.json entries; its statistics are those of
the frames before encoding, as lerobot computes them.

Everything goes to a hidden sibling directory of `root` first; finalize()
renames it to `root`. An interrupted collect therefore leaves nothing at
`root` that could be mistaken for a dataset.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vla.data.metadata import write_json, write_tasks
from vla.data.schema import (
    CODEBASE_VERSION,
    DATA_PATH_TEMPLATE,
    DEFAULT_CHUNKS_SIZE,
    DEFAULT_DATA_FILES_SIZE_IN_MB,
    DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    EPISODES_PATH_TEMPLATE,
    FRAME_DTYPES,
    IMAGE_DTYPE,
    IMAGE_STRUCT,
    INFO_PATH,
    PROVENANCE_KEY,
    STANDARD_FEATURES,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_DTYPE,
    VIDEO_PATH_TEMPLATE,
    arrow_type,
    data_schema,
    is_scalar,
    next_chunk_file,
    parquet_features,
    validate_features,
)
from vla.data.stats import FeatureStatsAccumulator, stats_to_json
from vla.data.video import choose_encoder, stream_info
from vla.data.video_files import VideoFeatureFiles

# PNG is lossless at any level; 1 keeps collection fast on small CPUs.
PNG_COMPRESS_LEVEL = 1


class LeRobotDatasetWriter:
    """Collect episodes and write them as a LeRobotDataset v3.0 at `root`.

    Usage: add_frame() for each step, save_episode() (or discard_episode())
    at the end of each episode, finalize() once. As a context manager, a
    clean exit finalizes and an exception removes everything written.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fps: int,
        robot_type: str,
        features: Mapping[str, Mapping[str, Any]],
        overwrite: bool = False,
        data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB,
        video_files_size_in_mb: float = DEFAULT_VIDEO_FILES_SIZE_IN_MB,
        chunks_size: int = DEFAULT_CHUNKS_SIZE,
        provenance: Mapping[str, Any] | None = None,
    ):
        if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
            raise ValueError(f"fps must be a positive int, got {fps!r}")
        if not isinstance(robot_type, str):
            raise ValueError(f"robot_type must be a string, got {robot_type!r}")
        if data_files_size_in_mb <= 0:
            raise ValueError(f"data_files_size_in_mb must be positive, got {data_files_size_in_mb}")
        if video_files_size_in_mb <= 0:
            raise ValueError(f"video_files_size_in_mb must be positive, got {video_files_size_in_mb}")
        if chunks_size <= 0:
            raise ValueError(f"chunks_size must be positive, got {chunks_size}")
        self.root = Path(root).absolute()
        self.fps = int(fps)
        self.robot_type = robot_type
        self.overwrite = overwrite
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb
        self.chunks_size = int(chunks_size)
        # How the data was made (image convention, initial-state source): info.json's PROVENANCE_KEY.
        self.provenance = dict(provenance or {})
        self.features = validate_features(features)
        self._all_features = {**self.features, **{k: dict(v) for k, v in STANDARD_FEATURES.items()}}
        self._schema = data_schema(self._all_features)
        self.video_keys = [k for k, ft in self.features.items() if ft["dtype"] == VIDEO_DTYPE]
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"{self.root} already exists; pass overwrite=True to replace it")
        # Before anything is written: a PyAV build without an encoder is refused up front.
        self.video_encoder = choose_encoder() if self.video_keys else None

        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root.parent / f".{self.root.name}.writing-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir()
        self._state = "open"

        self._frames: list[dict[str, np.ndarray]] = []
        self._frame_tasks: list[str] = []
        self._task_index: dict[str, int] = {}
        self._episode_rows: list[dict[str, Any]] = []
        self._dataset_stats = {
            name: FeatureStatsAccumulator(is_image=ft["dtype"] in FRAME_DTYPES)
            for name, ft in self._all_features.items()
        }
        self._videos = {
            key: VideoFeatureFiles(
                self._tmp,
                key,
                fps=self.fps,
                shape=self.features[key]["shape"],
                encoder=self.video_encoder,
                files_size_in_mb=video_files_size_in_mb,
                chunks_size=self.chunks_size,
            )
            for key in self.video_keys
        }
        self._total_frames = 0
        self._data_writer: pq.ParquetWriter | None = None
        self._chunk_index, self._file_index = 0, 0
        self._file_bytes = 0

    # -- state ---------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        return len(self._episode_rows)

    @property
    def num_frames(self) -> int:
        """Frames in saved episodes (not counting the episode being recorded)."""
        return self._total_frames

    @property
    def pending_frames(self) -> int:
        """Frames added since the last save_episode() / discard_episode()."""
        return len(self._frames)

    @property
    def tasks(self) -> list[str]:
        return list(self._task_index)

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"writer for {self.root} is {self._state}; create a new writer")

    # -- recording -----------------------------------------------------------

    def add_frame(self, frame: Mapping[str, np.ndarray], task: str) -> None:
        """Buffer one frame (copied) of the current episode, checking every feature."""
        self._require_open()
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        if not isinstance(frame, Mapping):
            raise ValueError(f"frame must be a dict of feature -> np.ndarray, got {type(frame).__name__}")
        missing = set(self.features) - set(frame)
        extra = set(frame) - set(self.features)
        if missing or extra:
            raise ValueError(
                f"frame {len(self._frames)} does not match the features: "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        frame_index = len(self._frames)
        stored = {name: self._checked_value(name, frame[name], frame_index) for name in self.features}
        self._frames.append(stored)
        self._frame_tasks.append(task)

    def _checked_value(self, name: str, value: Any, frame_index: int) -> np.ndarray:
        ft = self.features[name]
        where = f"feature {name!r} of frame {frame_index}"
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{where}: expected np.ndarray, got {type(value).__name__}")
        if ft["dtype"] in FRAME_DTYPES:
            expected_dtype, expected_shape = np.dtype(np.uint8), tuple(ft["shape"])
        else:
            expected_dtype, expected_shape = np.dtype(ft["dtype"]), tuple(ft["shape"])
        if value.dtype != expected_dtype:
            raise ValueError(f"{where}: dtype {value.dtype}, expected {expected_dtype}")
        if value.shape != expected_shape:
            raise ValueError(f"{where}: shape {value.shape}, expected {expected_shape}")
        if ft["dtype"] not in FRAME_DTYPES and np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ValueError(f"{where}: contains NaN or inf")
        return np.array(value, copy=True)

    def discard_episode(self) -> None:
        """Drop the frames of the current episode."""
        self._require_open()
        self._frames.clear()
        self._frame_tasks.clear()

    def save_episode(self) -> int:
        """Write the buffered frames as one episode; returns its episode_index."""
        self._require_open()
        n = len(self._frames)
        if n == 0:
            raise ValueError("save_episode() with no frames: call add_frame() first")
        columns = self._episode_columns(n)
        for name in self.features:  # the stacked arrays must match the declared features exactly
            expected = (n, *self.features[name]["shape"])
            if columns[name].shape != expected:
                raise ValueError(
                    f"feature {name!r}: episode array has shape {columns[name].shape}, expected {expected}"
                )

        table = self._episode_table(columns, n)
        chunk_index, file_index = self._write_data(table)

        episode_index = len(self._episode_rows)
        start = self._total_frames
        row: dict[str, Any] = {
            "episode_index": episode_index,
            "tasks": list(dict.fromkeys(self._frame_tasks)),
            "length": n,
            "data/chunk_index": chunk_index,
            "data/file_index": file_index,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
        }
        for key, files in self._videos.items():  # after the data columns, before the stats, as lerobot orders them
            row.update(files.append(columns[key]))
        for name, ft in self._all_features.items():
            episode_acc = FeatureStatsAccumulator(is_image=ft["dtype"] in FRAME_DTYPES)
            episode_acc.update(columns[name])
            self._dataset_stats[name].update(columns[name])
            for key, value in episode_acc.result().items():
                row[f"stats/{name}/{key}"] = value.tolist()
        # One metadata file is plenty for our sizes (thousands of episodes fit well under 100 MB).
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        self._episode_rows.append(row)
        self._total_frames += n
        self._frames.clear()
        self._frame_tasks.clear()
        return episode_index

    def _episode_columns(self, n: int) -> dict[str, np.ndarray]:
        columns = {name: np.stack([f[name] for f in self._frames]) for name in self.features}
        for task in self._frame_tasks:
            self._task_index.setdefault(task, len(self._task_index))
        frame_index = np.arange(n, dtype=np.int64)
        columns["timestamp"] = (frame_index / self.fps).astype(np.float32)
        columns["frame_index"] = frame_index
        columns["episode_index"] = np.full(n, len(self._episode_rows), dtype=np.int64)
        columns["index"] = self._total_frames + frame_index
        columns["task_index"] = np.array([self._task_index[t] for t in self._frame_tasks], dtype=np.int64)
        return columns

    def _episode_table(self, columns: dict[str, np.ndarray], n: int) -> pa.Table:
        arrays = []
        for name, ft in parquet_features(self._all_features).items():
            data = columns[name]
            if ft["dtype"] == IMAGE_DTYPE:
                png = pa.array([_encode_png(img) for img in data], type=pa.binary())
                arrays.append(pa.StructArray.from_arrays([png, pa.nulls(n, pa.string())], fields=list(IMAGE_STRUCT)))
            elif is_scalar(ft):
                arrays.append(pa.array(data.reshape(n), type=arrow_type(ft)))
            else:
                values = pa.array(data.reshape(-1), type=arrow_type(ft).value_type)
                arrays.append(pa.FixedSizeListArray.from_arrays(values, int(ft["shape"][0])))
        return pa.Table.from_arrays(arrays, schema=self._schema)

    def _write_data(self, table: pa.Table) -> tuple[int, int]:
        """Append an episode to the current data file, starting a new file past the size limit."""
        limit = self.data_files_size_in_mb * 1024 * 1024
        if self._data_writer is not None and self._file_bytes + table.nbytes >= limit:
            self._data_writer.close()
            self._data_writer = None
            self._chunk_index, self._file_index = next_chunk_file(self._chunk_index, self._file_index, self.chunks_size)
            self._file_bytes = 0
        if self._data_writer is None:
            path = self._tmp / DATA_PATH_TEMPLATE.format(chunk_index=self._chunk_index, file_index=self._file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(path, schema=self._schema, compression="snappy")
        self._data_writer.write_table(table)
        self._file_bytes += table.nbytes
        return self._chunk_index, self._file_index

    # -- closing -------------------------------------------------------------

    def finalize(self) -> Path:
        """Write the metadata and move the dataset to `root`; returns `root`."""
        self._require_open()
        if self._frames:
            raise ValueError(
                f"{len(self._frames)} frames of an unsaved episode: call save_episode() or discard_episode() first"
            )
        if not self._episode_rows:
            raise ValueError("no episodes saved: a dataset needs at least one episode")
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        for files in self._videos.values():
            files.close()

        write_tasks(self._tmp / TASKS_PATH, self.tasks)
        episodes_path = self._tmp / EPISODES_PATH_TEMPLATE.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._episode_rows), episodes_path, compression="snappy")
        stats = {name: acc.result() for name, acc in self._dataset_stats.items()}
        write_json(self._tmp / STATS_PATH, stats_to_json(stats))
        write_json(self._tmp / INFO_PATH, self._info())

        self._move_into_place()
        self._state = "finalized"
        return self.root

    def _info(self) -> dict[str, Any]:
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episode_rows),
            "total_frames": self._total_frames,
            "total_tasks": len(self._task_index),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_files_size_in_mb,
            "video_files_size_in_mb": self.video_files_size_in_mb,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episode_rows)}"},
            "data_path": DATA_PATH_TEMPLATE,
            "video_path": VIDEO_PATH_TEMPLATE if self.video_keys else None,
            "features": self._features_with_video_info(),
            **({PROVENANCE_KEY: self.provenance} if self.provenance else {}),
        }

    def _features_with_video_info(self) -> dict[str, dict[str, Any]]:
        """The features, each video with the 'info' lerobot reads from its first file (codec, pix_fmt, fps...)."""
        features = {name: dict(ft) for name, ft in self._all_features.items()}
        for key, files in self._videos.items():
            features[key]["info"] = stream_info(self._tmp / files.relative_path(0, 0))
        return features

    def _move_into_place(self) -> None:
        if not (self.root.exists() or self.root.is_symlink()):
            os.rename(self._tmp, self.root)
            return
        if not self.overwrite:
            self.abort()
            raise FileExistsError(f"{self.root} appeared while writing; pass overwrite=True to replace it")
        if not self.root.is_dir() or self.root.is_symlink():
            self.abort()
            raise FileExistsError(f"{self.root} exists and is not a directory; refusing to replace it")
        old = self.root.parent / f".{self.root.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(self.root, old)
        try:
            os.rename(self._tmp, self.root)
        except BaseException:
            os.rename(old, self.root)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Remove everything written so far; nothing appears at `root`. Idempotent."""
        if self._state != "open":
            return
        if self._data_writer is not None:
            try:
                self._data_writer.close()
            except Exception:  # noqa: BLE001 - the files are being deleted anyway
                pass
            self._data_writer = None
        for files in self._videos.values():
            files.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._state = "aborted"

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        if self._state == "open":
            try:
                self.finalize()
            except BaseException:
                self.abort()
                raise


def _encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()

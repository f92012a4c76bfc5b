"""The mp4 files of one video feature while a dataset is written: episodes appended, files rolled over.

Episodes follow each other in one continuous stream per file (frame k of the file
shows at k / fps), so an episode's place in its file is [frames before it / fps,
frames up to its end / fps): the from_timestamp / to_timestamp lerobot records.
A file that has grown past the size limit is closed and the next episode starts a
new one (lerobot checks before appending, we after: a file may overshoot the limit
by one episode).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla.data.schema import VIDEO_PATH_TEMPLATE, next_chunk_file, video_episode_columns
from vla.data.video import Mp4Writer


class VideoFeatureFiles:
    def __init__(
        self,
        root: Path,
        key: str,
        *,
        fps: int,
        shape: list[int],
        encoder: str,
        files_size_in_mb: float,
        chunks_size: int,
    ):
        self.root, self.key, self.fps, self.encoder = root, key, int(fps), encoder
        self.height, self.width = int(shape[0]), int(shape[1])
        self.limit_bytes = files_size_in_mb * 1024 * 1024
        self.chunks_size = int(chunks_size)
        self._chunk_index, self._file_index = 0, 0
        self._writer: Mp4Writer | None = None

    def relative_path(self, chunk_index: int, file_index: int) -> str:
        return VIDEO_PATH_TEMPLATE.format(video_key=self.key, chunk_index=chunk_index, file_index=file_index)

    def append(self, frames: np.ndarray) -> dict[str, float]:
        """Encode one episode's uint8 [N, H, W, 3] frames; returns its episode metadata columns (lerobot's names)."""
        if self._writer is not None and self._writer.bytes_written >= self.limit_bytes:
            self._writer.close()
            self._writer = None
            self._chunk_index, self._file_index = next_chunk_file(self._chunk_index, self._file_index, self.chunks_size)
        if self._writer is None:
            path = self.root / self.relative_path(self._chunk_index, self._file_index)
            self._writer = Mp4Writer(path, fps=self.fps, height=self.height, width=self.width, encoder=self.encoder)
        start = self._writer.frames
        self._writer.add(frames)
        values = (self._chunk_index, self._file_index, start / self.fps, self._writer.frames / self.fps)
        return dict(zip(video_episode_columns(self.key), values, strict=True))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

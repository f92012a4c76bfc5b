"""The mp4 files of one video feature while a dataset is written: episodes appended, files rolled over.

As lerobot does, each episode is encoded into a clip of its own (so it starts with a
keyframe), then appended to the feature's current file without re-encoding; clips
follow each other, so an episode's place in its file is [frames before it / fps,
frames up to its end / fps): the from_timestamp / to_timestamp lerobot records. When
the current file plus the clip would reach the size limit, the clip starts the next
file instead (lerobot's rule).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla.data.schema import VIDEO_PATH_TEMPLATE, next_chunk_file, video_episode_columns
from vla.data.video import Mp4Concatenation, Mp4Writer


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
        self._file: Mp4Concatenation | None = None
        # Clips live in the dataset's temporary folder (removed with it), not under videos/.
        self._clip_path = root / ".clips" / f"{key}.mp4"

    def relative_path(self, chunk_index: int, file_index: int) -> str:
        return VIDEO_PATH_TEMPLATE.format(video_key=self.key, chunk_index=chunk_index, file_index=file_index)

    def append(self, frames: np.ndarray) -> dict[str, float]:
        """Encode one episode's uint8 [N, H, W, 3] frames; returns its episode metadata columns (lerobot's names)."""
        clip = Mp4Writer(self._clip_path, fps=self.fps, height=self.height, width=self.width, encoder=self.encoder)
        try:
            clip.add(frames)
            clip.close()
        except BaseException:
            clip.abort()
            raise
        if self._file is not None and self._file.bytes_written + clip.bytes_written >= self.limit_bytes:
            self._file.close()
            self._file = None
            self._chunk_index, self._file_index = next_chunk_file(self._chunk_index, self._file_index, self.chunks_size)
        if self._file is None:
            path = self.root / self.relative_path(self._chunk_index, self._file_index)
            self._file = Mp4Concatenation(path, fps=self.fps)
        start = self._file.frames
        self._file.append(self._clip_path, len(frames))
        self._clip_path.unlink()
        values = (self._chunk_index, self._file_index, start / self.fps, self._file.frames / self.fps)
        return dict(zip(video_episode_columns(self.key), values, strict=True))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None

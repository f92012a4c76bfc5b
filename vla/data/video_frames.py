"""Frames of a dataset's video features, decoded a whole episode at a time and kept.

Training draws frames at random, but an mp4 is cheap to read front to back and
dear to seek in: so the first request for a frame decodes its episode's whole span
once, and a background thread decodes the episodes ahead of the requests, in order,
so the training loop finds them decoded (BENCHMARKS.md measures both).

A row's frame is the video frame shown at from_timestamp + the row's timestamp,
the nearest within tolerance_s, as lerobot looks it up; none within it is an error.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from vla.data.errors import DatasetError
from vla.data.video import VideoError, decode_span


class EpisodeVideoFrames:
    """Decodes episodes of the video features `keys` into caller-owned frame arrays.

    cache[key]: uint8 [total_frames, H, W, 3], written row by row; decoded[key]: bool
    [total_frames], set once a row holds its frame. files[key][episode] is the mp4
    path, spans[key]: float64 [episodes, 2] from/to timestamps, timestamps: float64
    [total_frames] the rows' timestamps, ranges: each episode's (first row, end row).
    """

    def __init__(
        self,
        keys: list[str],
        *,
        cache: dict[str, np.ndarray],
        decoded: dict[str, np.ndarray],
        files: dict[str, list[Path]],
        spans: dict[str, np.ndarray],
        timestamps: np.ndarray,
        ranges: list[tuple[int, int]],
        tolerance_s: float,
    ):
        self.keys = list(keys)
        self._cache, self._decoded = cache, decoded
        self._files, self._spans = files, spans
        self._timestamps, self._ranges = timestamps, ranges
        self.tolerance_s = float(tolerance_s)
        self._locks = [threading.Lock() for _ in ranges]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ahead_error: BaseException | None = None  # why decoding ahead stopped, if it did

    # -- decoding ----------------------------------------------------------------

    def ensure(self, episode: int) -> None:
        """Decode `episode` of every video key unless done (by this or the ahead thread)."""
        start = self._ranges[episode][0]
        if all(self._decoded[k][start] for k in self.keys):
            return
        with self._locks[episode]:  # the ahead thread may be decoding it: wait for it rather than decode twice
            for key in self.keys:
                if not self._decoded[key][start]:
                    self._decode(key, episode)

    def _decode(self, key: str, episode: int) -> None:
        start, end = self._ranges[episode]
        path = self._files[key][episode]
        offset = float(self._spans[key][episode, 0])
        wanted = offset + self._timestamps[start:end]
        tol = self.tolerance_s
        try:
            frames, times = decode_span(path, float(wanted.min()) - tol, float(wanted.max()) + tol)
        except VideoError as err:
            raise DatasetError(f"{err} (feature {key!r}, episode {episode})") from err
        if len(times) == 0:
            raise DatasetError(
                f"{path}: no frame of feature {key!r} between {wanted.min():.4f} s and {wanted.max():.4f} s "
                f"(episode {episode}, from_timestamp {offset:.4f} s): the file is shorter than the metadata says"
            )
        expected = self._cache[key].shape[1:]
        if frames.shape[1:] != expected:
            raise DatasetError(
                f"{path}: frames of feature {key!r} are {list(frames.shape[1:])}, info.json says {list(expected)}"
            )
        nearest = np.abs(wanted[:, None] - times[None, :]).argmin(axis=1)
        gap = np.abs(times[nearest] - wanted)
        bad = np.flatnonzero(gap >= tol)  # lerobot keeps a frame only if it is strictly within tolerance
        if bad.size:
            j = int(bad[0])
            raise DatasetError(
                f"{path}: no frame of feature {key!r} at {wanted[j]:.6f} s (frame {j} of episode {episode}: "
                f"from_timestamp {offset:.6f} + timestamp {self._timestamps[start + j]:.6f}); the nearest is at "
                f"{times[nearest[j]]:.6f} s, {gap[j]:.2g} s away, tolerance {tol:g} s "
                f"({bad.size} of {end - start} frames of the episode miss)"
            )
        self._cache[key][start:end] = frames[nearest]
        self._decoded[key][start:end] = True

    # -- decoding ahead ------------------------------------------------------------

    def start_ahead(self) -> None:
        """Decode every episode in a background thread, first to last (idempotent)."""
        if self._thread is not None or not self.keys:
            return
        self._thread = threading.Thread(target=self._ahead, name="vla-video-decode", daemon=True)
        self._thread.start()

    def _ahead(self) -> None:
        for episode in range(len(self._ranges)):
            if self._stop.is_set():
                return
            try:
                self.ensure(episode)
            except BaseException as err:  # noqa: BLE001 - the reader raises the same error when it asks for the episode
                self.ahead_error = err
                return

    def wait(self, timeout: float | None = None) -> bool:
        """Block until decoding ahead has finished; True if it has (or never started)."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # A dataset is pickled whole (e.g. into DataLoader workers): locks and threads are not, so each copy gets
    # its own, and decodes ahead again only if asked.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_locks=len(self._locks), _stop=None, _thread=None, ahead_error=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._locks = [threading.Lock() for _ in range(state["_locks"])]
        self._stop = threading.Event()

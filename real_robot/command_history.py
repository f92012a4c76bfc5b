"""The commands sent over the last moments, to tell whether the measured arm follows them.

A position-controlled arm reaches a command some time after it was sent, so the measured
pose at stamp t should lie among the commands sent since t - lag (or at the last one sent
before that, when the arm has been still). `following_error` is how far, per joint, the
measured pose lies outside the range those commands span; 0 when it is inside.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class CommandHistory:
    def __init__(self, lag_s: float, keep_s: float) -> None:
        if not (lag_s > 0 and keep_s >= lag_s):
            raise ValueError(f"need 0 < lag_s <= keep_s, got lag_s={lag_s}, keep_s={keep_s}")
        self.lag_s = lag_s
        self.keep_s = keep_s
        self._sent: deque[tuple[float, np.ndarray]] = deque()

    def clear(self) -> None:
        self._sent.clear()

    def add(self, t: float, positions: np.ndarray) -> None:
        self._sent.append((t, np.array(positions, dtype=np.float64)))
        # Keep one entry older than keep_s: the arm may still stand at it.
        while len(self._sent) > 1 and self._sent[1][0] < t - self.keep_s:
            self._sent.popleft()

    def following_error(self, measured: np.ndarray, measured_at: float) -> float | None:
        """Largest per-joint distance (rad) of `measured` from the range of the commands it may be
        following; None when nothing was sent yet."""
        if not self._sent:
            return None
        since = measured_at - self.lag_s
        recent = [q for t, q in self._sent if t >= since]
        older = [q for t, q in self._sent if t < since]
        if older:
            recent.append(older[-1])  # the arm may still be at the last command before the window
        span = np.stack(recent)
        lo, hi = span.min(axis=0), span.max(axis=0)
        outside = np.maximum(lo - measured, 0.0) + np.maximum(measured - hi, 0.0)
        return float(outside.max())

"""Action chunks played at the control rate, with temporal ensembling across chunks.

The inference thread calls `submit_chunk(chunk, obs_timestamp)`; the control loop
calls `next_action(now)`, which never waits on inference: it reads whatever
chunks are buffered under a lock held only for a few array operations.

Timing: row k of a chunk predicted from an observation taken at `obs_timestamp`
is the action for time `obs_timestamp + k * period`. Rows whose time has passed
by the time the chunk arrives (inference latency) are skipped, so a late chunk
still lines up with the world it was predicted for.

Ensembling (ACT's temporal ensembling): every buffered chunk that has a row for
the current tick contributes; the i-th oldest contribution gets weight
exp(-decay * i). decay > 0 trusts older predictions more (ACT's choice, smooth),
decay < 0 trusts newer ones more (reactive), decay = 0 is the plain mean.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Chunk:
    actions: np.ndarray  # [H, A], read-only
    start: float  # time of row 0
    seq: int  # submission order, breaks ties between equal start times

    def end(self, period: float) -> float:
        return self.start + (self.actions.shape[0] - 1) * period


class ChunkExecutor:
    def __init__(self, control_rate_hz: float, action_dim: int, ensemble_decay: float = 0.01,
                 temporal_ensembling: bool = True, max_chunks: int = 32) -> None:
        if not (math.isfinite(control_rate_hz) and control_rate_hz > 0):
            raise ValueError(f"control_rate_hz must be positive, got {control_rate_hz}")
        if action_dim <= 0:
            raise ValueError(f"action_dim must be positive, got {action_dim}")
        if not math.isfinite(ensemble_decay):
            raise ValueError(f"ensemble_decay must be finite, got {ensemble_decay}")
        if max_chunks <= 0:
            raise ValueError(f"max_chunks must be positive, got {max_chunks}")
        self.period = 1.0 / control_rate_hz
        self.action_dim = action_dim
        self.ensemble_decay = ensemble_decay
        self.temporal_ensembling = temporal_ensembling
        self._chunks: deque[_Chunk] = deque(maxlen=max_chunks)
        self._lock = threading.Lock()
        self._seq = 0
        self._generation = 0  # clear() counter: a chunk planned before a clear is refused

    def submit_chunk(self, chunk, obs_timestamp: float, generation: int | None = None) -> bool:
        """Buffer a chunk [H, A] (or [1, H, A]) predicted from an observation taken at obs_timestamp.

        Raises ValueError on a malformed chunk. Rows already in the past are
        skipped at play time; a chunk wholly in the past expires at the next tick.
        `generation`: `self.generation` read before the observation was taken; if clear() ran
        since (an e-stop, disable or new instruction while the policy was computing), the chunk
        is dropped and False returned, so it cannot play after the event that cleared the buffer.
        """
        actions = np.array(chunk, dtype=np.float64)  # copy made outside the lock
        if actions.ndim == 3 and actions.shape[0] == 1:
            actions = actions[0]  # a policy's [1, H, A] batch of one
        if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] != self.action_dim:
            raise ValueError(f"chunk has shape {actions.shape}, expected [H, {self.action_dim}]")
        if not np.all(np.isfinite(actions)):
            raise ValueError("chunk contains NaN/Inf")
        if not math.isfinite(obs_timestamp):
            raise ValueError(f"obs_timestamp must be finite, got {obs_timestamp}")
        actions.setflags(write=False)
        with self._lock:
            if generation is not None and generation != self._generation:
                return False
            self._seq += 1
            self._chunks.append(_Chunk(actions, float(obs_timestamp), self._seq))
        return True

    def next_action(self, now: float) -> np.ndarray | None:
        """The action for the tick at `now`, or None when no buffered chunk covers it (hold)."""
        with self._lock:
            # Expire chunks whose last row is more than half a period in the past.
            live = [c for c in self._chunks if c.end(self.period) >= now - 0.5 * self.period]
            if len(live) != len(self._chunks):
                self._chunks = deque(live, maxlen=self._chunks.maxlen)
            rows = []
            for c in sorted(live, key=lambda c: (c.start, c.seq)):  # oldest first
                k = int(math.floor((now - c.start) / self.period + 0.5))
                if 0 <= k < c.actions.shape[0]:
                    rows.append(c.actions[k])
        if not rows:
            return None
        if not self.temporal_ensembling:
            return rows[-1].copy()
        weights = np.exp(-self.ensemble_decay * np.arange(len(rows)))
        return (weights[:, None] * np.stack(rows)).sum(axis=0) / weights.sum()

    def clear(self) -> None:
        """Drop every buffered chunk (e.g. after an emergency stop or a new instruction)."""
        with self._lock:
            self._chunks.clear()
            self._generation += 1

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    @property
    def num_buffered(self) -> int:
        with self._lock:
            return len(self._chunks)

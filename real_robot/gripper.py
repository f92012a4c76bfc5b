"""The policy's gripper action -> finger position commands, gated by the arm's safety decision.

Policies trained in vla.sim use robosuite's convention: the last action entry is
in [-1, 1], -1 opens and +1 closes, and robosuite's gripper *integrates* it (the
sign says which way the fingers go). A position-controlled gripper therefore gets
a binary command: closed_positions when the (ensembled) value is above
close_threshold + hysteresis, open_positions below close_threshold - hysteresis,
no change in between (the very first command: the side of close_threshold). After
a change the next one waits min_dwell_s: a signal hovering at the threshold made a
gripper without these toggle every tick.

Safety: the gripper changes only on control ticks where the arm command is a
normal move (not a hold). While not enabled, e-stopped or on stale observations
it keeps its last command (an e-stop must not drop a held object), and before
the first move it is sent nothing at all.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from vla.real_robot.rate_limited_log import RateLimitedLog
from vla.real_robot.robot_config import GripperConfig


class GripperCommander:
    def __init__(self, config: GripperConfig, log: RateLimitedLog, resend_interval_s: float = 1.0) -> None:
        self.config = config
        self.log = log
        # Re-send the unchanged command now and then: a controller that restarted has forgotten it.
        self.resend_interval_s = resend_interval_s
        self.open = np.array(config.open_positions, dtype=np.float64)
        self.closed = np.array(config.closed_positions, dtype=np.float64)
        if config.position_min is not None and config.position_max is not None:
            lo, hi = np.array(config.position_min), np.array(config.position_max)
            for name, positions in (("open_positions", self.open), ("closed_positions", self.closed)):
                if positions.shape != lo.shape or np.any(positions < lo) or np.any(positions > hi):
                    raise ValueError(f"gripper {name} {positions.tolist()} outside the finger limits "
                                     f"[{lo.tolist()}, {hi.tolist()}]")
        self.dwell_refused = 0  # changes asked for within min_dwell_s of the last one
        self._changed_at = -math.inf
        self.closed_state: bool | None = None  # None: nothing commanded yet
        self.changes = 0
        self.held_changes = 0  # changes the policy asked for during a hold, not carried out
        self.non_finite = 0
        self._last_sent = -math.inf

    def update(self, value: float | None, holding: bool, now: float) -> np.ndarray | None:
        """The finger positions to publish on this tick, or None to publish nothing."""
        wanted = self.closed_state
        if value is not None:
            if not math.isfinite(value):
                self.non_finite += 1
                self.log.log("gripper_non_finite", "gripper action is NaN/Inf: gripper keeps its command")
            else:
                wanted = self._wanted(value)
        if wanted != self.closed_state and wanted is not None:
            if holding:
                self.held_changes += 1
                self.log.log("gripper_held", "gripper change not carried out: the arm is holding")
            elif now - self._changed_at < self.config.min_dwell_s:
                self.dwell_refused += 1
                self.log.log("gripper_dwell", f"gripper change deferred: the last one was under "
                                              f"{self.config.min_dwell_s} s ago")
            else:
                self.closed_state = wanted
                self.changes += 1
                self.log.log("gripper", f"gripper {'closing' if wanted else 'opening'}", logging.INFO)
                self._last_sent = self._changed_at = now
                return self.positions
        if self.closed_state is not None and now - self._last_sent >= self.resend_interval_s:
            self._last_sent = now
            return self.positions
        return None

    def _wanted(self, value: float) -> bool:
        threshold, band = self.config.close_threshold, self.config.hysteresis
        if self.closed_state is None:
            return value > threshold
        if self.closed_state:
            return value > threshold - band  # stays closed until clearly below
        return value > threshold + band  # stays open until clearly above

    @property
    def positions(self) -> np.ndarray | None:
        if self.closed_state is None:
            return None
        return (self.closed if self.closed_state else self.open).copy()

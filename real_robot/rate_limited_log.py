"""One log line per kind of event per interval, so a 100 Hz fault cannot flood the log."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class RateLimitedLog:
    """Logs the first event of a kind, then at most one line per `interval_s`,
    reporting how many of that kind were suppressed in between."""

    def __init__(self, logger: logging.Logger | None = None, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger or logging.getLogger("vla.real_robot")
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, kind: str, message: str, level: int = logging.WARNING) -> bool:
        """Log `message` under `kind` unless one was logged less than interval_s ago; True when logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            suppressed = self._suppressed.pop(kind, 0)
            self._last[kind] = now
        suffix = f" ({suppressed} more suppressed)" if suppressed else ""
        self.logger.log(level, "[%s] %s%s", kind, message, suffix)
        return True

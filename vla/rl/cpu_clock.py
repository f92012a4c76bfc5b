"""CPU seconds a training process tree has used: the trainer plus its env worker processes.

Wall time on a shared machine says little about cost; RL budgets here are CPU-minutes per seed.
Ray workers are not children of the trainer (Ray's own daemons start them), so with the Ray
backend this counts the trainer alone.
"""

from __future__ import annotations

import psutil


def process_tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants, so far."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:  # a worker that exited between listing and reading
            continue
        total += t.user + t.system
    return total

"""The threads a node of ours runs beside rclpy: one spinning its callbacks, the rest its own loops.

The policy node and the sim arm share this so start and stop happen the same way:
stop() sets the event every loop watches, shuts the executor down and joins.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
import threading
from typing import Callable

from vla.real_robot.rate_limited_log import RateLimitedLog

EXECUTORS = ("single_threaded", "events")


def make_executor(kind: str, context):
    """rclpy's SingleThreadedExecutor, or the EventsExecutor (callbacks dispatched from C++, less GIL time)."""
    if kind == "single_threaded":
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor(context=context)
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    raise ValueError(f"executor {kind!r} is not one of {EXECUTORS}")


def set_realtime_priority(priority: int, rlog: RateLimitedLog, what: str) -> bool:
    """SCHED_FIFO at `priority` for the calling thread (0: leave it alone). Needs CAP_SYS_NICE (or an
    rtprio limit); without it one warning and the thread runs at normal priority."""
    if priority <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread, on Linux
        return True
    except (AttributeError, OSError) as exc:
        rlog.log(f"realtime_priority_{what}", f"{what} thread stays at normal priority: SCHED_FIFO "
                                              f"{priority} refused ({exc})")
        return False


class _SchedAttr(ctypes.Structure):  # struct sched_attr (linux/sched/types.h), SCHED_ATTR_SIZE_VER1
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}


def set_fair_slice(slice_us: float, rlog: RateLimitedLog, what: str) -> bool:
    """Ask the kernel's EEVDF scheduler (Linux 6.12+) for a short time slice for the calling thread,
    which stays at normal priority and keeps its fair share (0: leave it alone).

    A thread with a shorter slice gets an earlier virtual deadline, so when it wakes on a loaded
    machine it preempts a running normal task sooner instead of waiting out that task's slice
    (about 3 ms here). Needs no privilege; older kernels ignore the request. Threads that sleep
    most of the time only: it is a latency hint, not more CPU."""
    if slice_us <= 0:
        return False
    number = _SYS_SCHED_SETATTR.get(platform.machine())
    if number is None or not sys.platform.startswith("linux"):
        rlog.log(f"fair_slice_{what}", f"{what} thread: no sched_setattr on {sys.platform}/{platform.machine()}; "
                                       f"default time slice")
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=0,  # SCHED_OTHER, nice kept
                      sched_nice=os.getpriority(os.PRIO_PROCESS, 0), sched_runtime=int(slice_us * 1000))
    if libc.syscall(number, 0, ctypes.byref(attr), 0) != 0:
        rlog.log(f"fair_slice_{what}", f"{what} thread: time slice {slice_us} us refused "
                                       f"({os.strerror(ctypes.get_errno())}); default time slice")
        return False
    return True


def set_threads_realtime(native_ids, priority: int, rlog: RateLimitedLog, what: str) -> int:
    """SCHED_FIFO at `priority` for other threads of this process, by native id; returns how many."""
    raised = 0
    for tid in native_ids:
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
            raised += 1
        except OSError as exc:
            rlog.log(f"realtime_priority_{what}", f"{what} thread {tid} stays at normal priority ({exc})")
    return raised


def set_dds_threads_realtime(priority: int, rlog: RateLimitedLog) -> int:
    """SCHED_FIFO for Fast DDS's own threads in this process (named "dds.*": receive, events,
    async send); returns how many were raised. They exist once the first node of a context does.

    Messages reach a callback only after such a thread read them off shared memory or UDP; on a
    loaded machine a normal-priority one waits behind every other process (benchmarks/ros_loop.py).
    """
    if priority <= 0:
        return 0
    raised = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if not f.read().startswith("dds."):
                    continue
            os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(priority))
            raised += 1
        except OSError as exc:  # the thread ended, or no CAP_SYS_NICE
            rlog.log("realtime_priority_dds", f"Fast DDS thread {tid} stays at normal priority ({exc})")
    return raised


class NodeThreads:
    """Spin `node` and run `loops` (name -> callable), each in a daemon thread, until stop().

    `priorities` (thread name -> SCHED_FIFO priority, "spin" included) lifts the threads whose
    lateness is latency: on a loaded machine a normal thread waits behind every other process.
    Only threads that sleep most of the time may have one: a real-time thread never yields a core.
    """

    def __init__(self, node, prefix: str, rlog: RateLimitedLog, executor: str = "single_threaded",
                 priorities: dict[str, int] | None = None, slices_us: dict[str, float] | None = None) -> None:
        self.node = node
        self.prefix = prefix
        self.rlog = rlog
        self.executor_kind = executor
        self.priorities = dict(priorities or {})
        self.slices_us = dict(slices_us or {})  # thread name -> EEVDF time slice (set_fair_slice)
        self.stop_event = threading.Event()
        self._executor = None
        self._threads: list[threading.Thread] = []

    def start(self, loops: dict[str, Callable[[], None]]) -> None:
        self._executor = make_executor(self.executor_kind, self.node.context)
        self._executor.add_node(self.node)
        for name, target in {"spin": self._spin, **loops}.items():
            thread = threading.Thread(target=self._run, args=(name, target), name=f"{self.prefix}-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def alive(self) -> list[bool]:
        return [t.is_alive() for t in self._threads]

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=timeout_s)
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()

    def _run(self, name: str, target: Callable[[], None]) -> None:
        if not set_realtime_priority(self.priorities.get(name, 0), self.rlog, name):
            set_fair_slice(self.slices_us.get(name, 0), self.rlog, name)
        target()

    def _spin(self) -> None:
        # spin_once with a timeout, not spin(): the loop must notice stop() without a message arriving.
        while not self.stop_event.is_set() and self.node.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception as exc:  # shutting down, or a callback raised: keep the node alive
                if self.stop_event.is_set():
                    return
                self.rlog.log("spin_error", f"executor: {type(exc).__name__}: {exc}", logging.ERROR)

"""A local checkpoint's inference in a child process, served on loopback (`vla serve-ros --inference_process`).

Why a process and not only the node's inference thread: the tiny VLA's forward pass is mostly
small tensor ops whose Python glue holds the GIL, so the control thread waits for it. On a loaded
2-core machine, running the same policy in a child process halved the control loop's p99 jitter
(BENCHMARKS.md, "ROS 2 loop ... with a real policy"). The child is `vla serve-policy` on a free
loopback port; the node talks to it through the same PolicyClient as to a remote GPU server.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import threading
import time

from vla.real_robot.policy_client import PolicyClient


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exit_with_parent(parent: int) -> None:
    """The server must not outlive serve-ros (killed, crashed, OOM): it would hold its memory, and
    its GPU, for nothing. Polls the parent once a second."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _serve(policy: str, port: int, device: str, parent: int) -> None:
    from vla.real_robot.serve_policy import serve_policy

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    serve_policy(policy, host="127.0.0.1", port=port, device=device)


class LocalPolicyProcess:
    """Starts the server process and connects to it; `client` is the policy the node calls."""

    def __init__(self, policy: str, device: str = "cpu", start_timeout_s: float = 180.0):
        port = _free_loopback_port()
        self.url = f"ws://127.0.0.1:{port}"
        self.process = mp.get_context("spawn").Process(target=_serve, args=(policy, port, device, os.getpid()),
                                                       name="vla-inference", daemon=True)
        self.process.start()
        try:
            self._connect(policy, start_timeout_s)
        except BaseException:  # a failed start, or Ctrl-C/SIGTERM while waiting: no child left behind
            self.close()
            raise

    def _connect(self, policy: str, start_timeout_s: float) -> None:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if not self.process.is_alive():
                raise RuntimeError(f"the inference process for {policy} exited (code {self.process.exitcode}) "
                                   "before serving: see its error above")
            try:
                self.client = PolicyClient(self.url)
                return
            except Exception as exc:  # not listening yet (the child is still importing torch, loading the policy)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the inference process for {policy} did not serve on {self.url} "
                                       f"within {start_timeout_s:.0f} s (last error: {exc})") from None
                time.sleep(0.2)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)

"""Vectorised env: each ``RobosuiteEnv`` in its own worker process, driven over a Pipe.

Protocol: the parent sends ``(command, payload)``; the worker answers
``("ok", result)`` or ``("error", traceback_text)`` and keeps serving, so one
bad call does not kill the worker. Every exchange goes through
``_send`` / ``_recv``, the one place a watchdog (timeouts, restarting a dead
worker) has to hook in.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable

import numpy as np

from .tasks import get_task

StepResult = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]


class VectorEnvError(RuntimeError):
    """A worker failed; the message names the env index and carries its traceback."""


def _worker_main(conn: Connection, env_kwargs: dict[str, Any]) -> None:
    # Ctrl-C goes to the parent, which closes the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = None
    try:
        from .robosuite_env import RobosuiteEnv

        env = RobosuiteEnv(**env_kwargs)
        conn.send(("ok", None))
    except Exception:  # noqa: BLE001 - reported to the parent verbatim
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return

    handlers: dict[str, Callable[[Any], Any]] = {
        "reset": lambda seed: env.reset(seed=seed)[0],
        "step_chunk": lambda args: env.step_chunk(args[0], record=args[1]),
        "privileged_state": lambda _: env.privileged_state(),
    }
    try:
        while True:
            try:
                command, payload = conn.recv()
            except EOFError:  # parent went away
                break
            if command == "close":
                conn.send(("ok", None))
                break
            try:
                handler = handlers[command]
                conn.send(("ok", handler(payload)))
            except Exception:  # noqa: BLE001
                conn.send(("error", traceback.format_exc()))
    finally:
        env.close()
        conn.close()


class VectorEnv:
    """``num_envs`` copies of ``RobosuiteEnv(**env_kwargs)``, one per process.

    Calls fan out to all (active) workers first and then collect the answers,
    so the envs step in parallel.
    """

    def __init__(
        self,
        num_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        start_method: str = "forkserver",
    ) -> None:
        if int(num_envs) != num_envs or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if start_method not in ("forkserver", "spawn"):
            # fork would copy a parent's live OpenGL / torch state into workers.
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
        self.num_envs = int(num_envs)
        self.env_kwargs = dict(env_kwargs or {})
        get_task(self.env_kwargs.get("task", "lift"))  # fail fast, before any process starts
        self._closed = False
        ctx = mp.get_context(start_method)
        self._conns: list[Connection] = []
        self._procs: list[mp.process.BaseProcess] = []
        for i in range(self.num_envs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main, args=(child, self.env_kwargs), name=f"vla-sim-env-{i}", daemon=True
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        try:
            self._gather(range(self.num_envs), "start")
        except BaseException:
            self.close()
            raise

    # ----- public API -----

    def reset(self, seeds: list[int | None]) -> list[dict[str, Any]]:
        """Reset every env, env ``i`` with ``seeds[i]``; the observations in order."""
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        for i, seed in enumerate(seeds):
            self._send(i, "reset", None if seed is None else int(seed))
        return self._gather(range(self.num_envs), "reset")

    def step_chunk(
        self,
        actions: np.ndarray,
        record: list[bool] | None = None,
        active: list[bool] | None = None,
    ) -> list[StepResult | None]:
        """Each active env runs ``actions[i]`` ([H, 7]) via ``RobosuiteEnv.step_chunk``.

        Inactive envs are not touched and give None.
        """
        self._check_open()
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != self.num_envs or actions.shape[2] != 7:
            raise ValueError(f"actions must have shape [{self.num_envs}, H, 7], got {actions.shape}")
        record = self._per_env_flags(record, False, "record")
        active = self._per_env_flags(active, True, "active")
        indices = [i for i in range(self.num_envs) if active[i]]
        for i in indices:
            self._send(i, "step_chunk", (actions[i], record[i]))
        results: list[StepResult | None] = [None] * self.num_envs
        for i, result in zip(indices, self._gather(indices, "step_chunk")):
            results[i] = result
        return results

    def privileged_state(self) -> list[dict[str, np.ndarray]]:
        """``RobosuiteEnv.privileged_state()`` of every env (for scripted experts)."""
        self._check_open()
        for i in range(self.num_envs):
            self._send(i, "privileged_state", None)
        return self._gather(range(self.num_envs), "privileged_state")

    def close(self) -> None:
        """Stop all workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc, conn in zip(self._procs, self._conns):
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            conn.close()

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_envs

    # ----- transport -----

    def _send(self, i: int, command: str, payload: Any) -> None:
        try:
            self._conns[i].send((command, payload))
        except (BrokenPipeError, OSError) as exc:
            raise VectorEnvError(self._dead_message(i, command)) from exc

    def _recv(self, i: int, command: str) -> Any:
        """Env ``i``'s answer to ``command``; VectorEnvError if it failed or died."""
        try:
            status, value = self._conns[i].recv()
        except (EOFError, ConnectionResetError, OSError) as exc:
            raise VectorEnvError(self._dead_message(i, command)) from exc
        if status != "ok":
            summary = value.strip().splitlines()[-1] if value.strip() else "unknown error"
            where = "failed to start" if command == "start" else f"raised in {command!r}"
            raise VectorEnvError(f"env {i} {where}: {summary}\nworker traceback:\n{value}")
        return value

    def _gather(self, indices: Any, command: str) -> list[Any]:
        """Answers from ``indices`` in order; reads every answer before raising the first error."""
        results, first_error = [], None
        for i in indices:
            try:
                results.append(self._recv(i, command))
            except VectorEnvError as exc:
                results.append(None)
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    def _dead_message(self, i: int, command: str) -> str:
        code = self._procs[i].exitcode
        return f"env {i} worker process is gone during {command!r} (exit code {code})"

    def _per_env_flags(self, flags: list[bool] | None, default: bool, name: str) -> list[bool]:
        if flags is None:
            return [default] * self.num_envs
        if len(flags) != self.num_envs:
            raise ValueError(f"{name} needs {self.num_envs} entries, got {len(flags)}")
        return [bool(f) for f in flags]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("VectorEnv is closed")

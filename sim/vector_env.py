"""Vectorised env: each ``RobosuiteEnv`` in its own worker process, driven over a Pipe.

Protocol: the parent sends ``(command, payload)``; the worker answers
``("ok", result)`` or ``("error", traceback_text)`` and keeps serving, so one
bad call does not kill the worker.

Watchdog: every answer is awaited for at most ``step_timeout_s``. A worker
that dies or does not answer in time is killed and replaced by a fresh one
built from the same kwargs. Its episode is lost; ``step_chunk`` reports it as
an infrastructure failure (``info["infra_failure"]``), never as a task failure,
and ``reset`` simply retries on the fresh worker.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable

import numpy as np

from .tasks import get_task

StepResult = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]

# Attempts (first try included) at resetting one env whose worker keeps dying.
RESET_ATTEMPTS = 3


class VectorEnvError(RuntimeError):
    """A worker failed; the message names the env index and carries its traceback."""


class WorkerLost(VectorEnvError):
    """A worker died or timed out; it has already been replaced by a fresh one."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"env {index}: {reason}")
        self.index = index
        self.reason = reason


def _worker_main(conn: Connection, env_kwargs: dict[str, Any]) -> None:
    # Ctrl-C goes to the parent, which closes the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = None
    try:
        from .make_env import make_env

        env = make_env(**env_kwargs)  # a robosuite task, or a LIBERO "<suite>/<task>"
        conn.send(("ok", None))
    except Exception:  # noqa: BLE001 - reported to the parent verbatim
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return

    # Test-only fault injection (see VectorEnv._inject_fault): seconds to sleep
    # before the next step_chunk, to stand for a hung simulator.
    fault = {"sleep_s": 0.0}

    def step_chunk(args: Any) -> Any:
        seconds, fault["sleep_s"] = fault["sleep_s"], 0.0
        if seconds > 0:
            time.sleep(seconds)
        return env.step_chunk(args[0], record=args[1])

    def inject_fault(sleep_s: float) -> None:
        fault["sleep_s"] = float(sleep_s)

    handlers: dict[str, Callable[[Any], Any]] = {
        "reset": lambda args: env.reset(seed=args[0], options=args[1])[0],
        "step_chunk": step_chunk,
        "privileged_state": lambda _: env.privileged_state(),
        "inject_fault": inject_fault,
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
    so the envs step in parallel. ``step_timeout_s`` bounds every call after
    start-up (None: wait forever); ``start_timeout_s`` bounds building an env.
    ``restarts`` counts workers replaced by the watchdog.
    """

    def __init__(
        self,
        num_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        start_method: str = "forkserver",
        step_timeout_s: float | None = 120.0,
        start_timeout_s: float | None = 300.0,
    ) -> None:
        if int(num_envs) != num_envs or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if start_method not in ("forkserver", "spawn"):
            # fork would copy a parent's live OpenGL / torch state into workers.
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
        for name, value in (("step_timeout_s", step_timeout_s), ("start_timeout_s", start_timeout_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        self.num_envs = int(num_envs)
        self.env_kwargs = dict(env_kwargs or {})
        self.step_timeout_s = step_timeout_s
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        task = self.env_kwargs.get("task", "lift")
        if isinstance(task, str) and "/" in task:  # fail fast, before any process starts
            from .libero_env import get_libero_task

            get_libero_task(task)
        else:
            get_task(task)
        self._closed = False
        self._ctx = mp.get_context(start_method)
        self._conns: list[Connection] = []
        self._procs: list[mp.process.BaseProcess] = []
        # Why env i's current episode was lost (None: not lost); cleared by reset.
        self._lost: list[str | None] = [None] * self.num_envs
        self._last_obs: list[dict[str, Any] | None] = [None] * self.num_envs
        for i in range(self.num_envs):
            conn, proc = self._spawn(i)
            self._conns.append(conn)
            self._procs.append(proc)
        try:
            self._gather(range(self.num_envs), "start", self.start_timeout_s)
        except BaseException:
            self.close()
            raise

    # ----- public API -----

    def reset(self, seeds: list[int | None], options: list[dict | None] | None = None) -> list[dict[str, Any]]:
        """Reset every env, env ``i`` with ``seeds[i]`` (and ``options[i]``); the observations in order.

        A worker lost during reset is replaced and the reset retried, up to
        ``RESET_ATTEMPTS`` tries; reset(seed) alone decides the episode, so the
        retry gives the same observation.
        """
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        seeds = [None if seed is None else int(seed) for seed in seeds]
        options = list(options) if options is not None else [None] * self.num_envs
        if len(options) != self.num_envs:
            raise ValueError(f"need {self.num_envs} reset options, got {len(options)}")
        pending = list(range(self.num_envs))
        obs: list[Any] = [None] * self.num_envs
        for attempt in range(1, RESET_ATTEMPTS + 1):
            sent = [i for i in pending if self._try_send(i, "reset", (seeds[i], options[i]))]
            answers = self._gather_lossy(sent, "reset", self.step_timeout_s)
            failed = [i for i in pending if i not in sent or isinstance(answers.get(i), WorkerLost)]
            for i in pending:
                if i not in failed:
                    obs[i] = answers[i]
            if not failed:
                break
            if attempt == RESET_ATTEMPTS:
                reasons = "; ".join(f"env {i}: {self._lost[i]}" for i in failed)
                raise VectorEnvError(f"reset failed {RESET_ATTEMPTS} times, worker lost each time ({reasons})")
            pending = failed
        self._lost = [None] * self.num_envs
        self._last_obs = list(obs)
        return obs

    def step_chunk(
        self,
        actions: np.ndarray,
        record: list[bool] | None = None,
        active: list[bool] | None = None,
    ) -> list[StepResult | None]:
        """Each active env runs ``actions[i]`` ([H, 7]) via ``RobosuiteEnv.step_chunk``.

        Inactive envs are not touched and give None. An env whose worker
        crashed or timed out (now, or earlier in this episode) gives
        ``(last_obs, 0.0, True, True, info)`` with ``info["infra_failure"]``
        True and ``info["infra_reason"]`` saying what happened; call reset to
        start a new episode there.
        """
        self._check_open()
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != self.num_envs or actions.shape[2] != 7:
            raise ValueError(f"actions must have shape [{self.num_envs}, H, 7], got {actions.shape}")
        record = self._per_env_flags(record, False, "record")
        active = self._per_env_flags(active, True, "active")
        indices = [i for i in range(self.num_envs) if active[i] and self._lost[i] is None]
        sent = [i for i in indices if self._try_send(i, "step_chunk", (actions[i], record[i]))]
        answers = self._gather_lossy(sent, "step_chunk", self.step_timeout_s)
        results: list[StepResult | None] = [None] * self.num_envs
        for i in range(self.num_envs):
            if not active[i]:
                continue
            answer = answers.get(i)
            if self._lost[i] is not None:
                results[i] = self._infra_failure_result(i, record[i])
            else:
                results[i] = answer
                self._last_obs[i] = answer[0]
        return results

    def privileged_state(self) -> list[dict[str, np.ndarray] | None]:
        """``RobosuiteEnv.privileged_state()`` of every env (for scripted experts).

        None for an env whose episode was lost (its next step_chunk reports it).
        """
        self._check_open()
        indices = [i for i in range(self.num_envs) if self._lost[i] is None]
        sent = [i for i in indices if self._try_send(i, "privileged_state", None)]
        answers = self._gather_lossy(sent, "privileged_state", self.step_timeout_s)
        return [None if self._lost[i] is not None else answers[i] for i in range(self.num_envs)]

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
                proc.kill()
                proc.join(timeout=5)
            conn.close()

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_envs

    # ----- workers -----

    def _spawn(self, i: int) -> tuple[Connection, mp.process.BaseProcess]:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main, args=(child, self.env_kwargs), name=f"vla-sim-env-{i}", daemon=True
        )
        proc.start()
        child.close()
        return parent, proc

    def _replace_worker(self, i: int, reason: str) -> None:
        """Kill env ``i``'s worker, mark its episode lost, start a fresh one and wait until it is up."""
        proc = self._procs[i]
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        self._conns[i].close()
        self._lost[i] = reason
        self.restarts += 1
        self._conns[i], self._procs[i] = self._spawn(i)
        # A worker that cannot even be rebuilt is not a transient fault: raise.
        self._recv(i, "start", self.start_timeout_s)

    def _inject_fault(self, i: int, sleep_s: float) -> None:
        """Test-only: env ``i``'s worker sleeps ``sleep_s`` before its next step_chunk."""
        self._send(i, "inject_fault", sleep_s)
        self._gather([i], "inject_fault", self.step_timeout_s)

    def _infra_failure_result(self, i: int, record: bool) -> StepResult:
        info: dict[str, Any] = {
            "is_success": False,
            "steps": 0,
            "rewards": [],
            "infra_failure": True,
            "infra_reason": self._lost[i],
        }
        if record:
            info["frames"] = []
        return self._last_obs[i], 0.0, True, True, info

    # ----- transport -----

    def _send(self, i: int, command: str, payload: Any) -> None:
        try:
            self._conns[i].send((command, payload))
        except (BrokenPipeError, OSError) as exc:
            raise VectorEnvError(self._dead_message(i, command)) from exc

    def _try_send(self, i: int, command: str, payload: Any) -> bool:
        """Send, or replace a worker found dead; whether the command went out."""
        try:
            self._conns[i].send((command, payload))
            return True
        except (BrokenPipeError, OSError):
            self._replace_worker(i, self._dead_message(i, command))
            return False

    def _recv(self, i: int, command: str, timeout_s: float | None) -> Any:
        """Env ``i``'s answer to ``command``.

        WorkerLost if the worker died or stayed silent for ``timeout_s`` (it is
        killed then; the caller replaces it); VectorEnvError if the worker
        raised or, during start-up, failed in any way.
        """
        conn = self._conns[i]
        try:
            if not conn.poll(timeout_s):
                self._procs[i].kill()
                self._procs[i].join(timeout=10)
                limit = self.start_timeout_s if command == "start" else self.step_timeout_s
                reason = f"worker did not answer {command!r} within {limit} s; killed"
                if command == "start":
                    raise VectorEnvError(f"env {i} failed to start: {reason}")
                raise WorkerLost(i, reason)
            status, value = conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            self._procs[i].join(timeout=5)
            reason = self._dead_message(i, command)
            if command == "start":
                raise VectorEnvError(reason) from None
            raise WorkerLost(i, reason) from None
        if status != "ok":
            summary = value.strip().splitlines()[-1] if value.strip() else "unknown error"
            where = "failed to start" if command == "start" else f"raised in {command!r}"
            raise VectorEnvError(f"env {i} {where}: {summary}\nworker traceback:\n{value}")
        return value

    def _gather(self, indices: Any, command: str, timeout_s: float | None) -> list[Any]:
        """Answers from ``indices`` in order; reads every answer before raising the first error."""
        answers = self._gather_lossy(indices, command, timeout_s)
        lost = [a for a in answers.values() if isinstance(a, WorkerLost)]
        if lost:
            raise lost[0]
        return [answers[i] for i in indices]

    def _gather_lossy(self, indices: Any, command: str, timeout_s: float | None) -> dict[int, Any]:
        """Answers by env index, a WorkerLost in place of a lost worker's.

        All workers got the command at about the same time, so one deadline
        covers them all. Lost workers are replaced; a worker's own error is
        raised after every answer is in.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        answers: dict[int, Any] = {}
        first_error: VectorEnvError | None = None
        for i in indices:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                answers[i] = self._recv(i, command, left)
            except WorkerLost as lost:
                answers[i] = lost
            except VectorEnvError as exc:
                answers[i] = None
                first_error = first_error or exc
        # Replace only after every answer is in: a restart takes seconds, which
        # must not eat into the other workers' deadline.
        for i, answer in answers.items():
            if isinstance(answer, WorkerLost):
                self._replace_worker(i, answer.reason)
        if first_error is not None:
            raise first_error
        return answers

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

"""Vectorised env: ``RobosuiteEnv`` copies in worker processes, driven over Pipes.

Each worker process holds up to ``envs_per_worker`` envs and steps them in
lock-step: one message per worker carries the chunks of all its active envs and
one answer brings back their results, so the per-message pickling and wake-up
cost is paid once per worker, not once per env. One env per worker steps the
envs in parallel on separate cores; several per worker trade that for fewer
processes and messages, which pays when a chunk costs little physics (state
policies, nothing rendered).

Protocol: the parent sends ``(command, payload)``; the worker answers
``("ok", result)`` or ``("error", (slot, traceback_text))`` (``slot``: which of
its envs raised, or None) and keeps serving, so one bad call does not kill the
worker.

Watchdog: every answer is awaited for at most ``step_timeout_s``. A worker
that dies or does not answer in time is killed and replaced by a fresh one
built from the same kwargs. The episodes of all its envs are lost;
``step_chunk`` reports each as an infrastructure failure
(``info["infra_failure"]``), never as a task failure, and ``reset`` simply
retries on the fresh worker.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable

import numpy as np

from .tasks import get_task

StepResult = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]

# Attempts (first try included) at resetting the envs of a worker that keeps dying.
RESET_ATTEMPTS = 3


class VectorEnvError(RuntimeError):
    """A worker failed; the message names the env index and carries its traceback."""


class WorkerLost(VectorEnvError):
    """A worker died or timed out; it has already been replaced by a fresh one."""

    def __init__(self, worker: int, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.worker = worker
        self.reason = reason


class _SlotError(Exception):
    """One of a worker's envs raised: which one, and its traceback."""

    def __init__(self, slot: int, text: str) -> None:
        self.slot, self.text = slot, text


def _on_each(envs: list[Any], items: list[tuple[int, Any]], call: Callable[[Any, Any], Any]) -> list[Any]:
    """``call(envs[slot], arg)`` for each ``(slot, arg)``, in order.

    Every env runs even if an earlier one raised, as it would in a worker of
    its own; the first error is raised afterwards, tagged with its slot.
    """
    results, error = [], None
    for slot, arg in items:
        try:
            results.append(call(envs[slot], arg))
        except Exception:  # noqa: BLE001 - reported to the parent verbatim
            results.append(None)
            error = error or _SlotError(slot, traceback.format_exc())
    if error is not None:
        raise error
    return results


def _worker_main(conn: Connection, env_kwargs: dict[str, Any], n_envs: int) -> None:
    # Ctrl-C goes to the parent, which closes the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs: list[Any] = []
    try:
        from .make_env import make_env

        for _ in range(n_envs):  # a robosuite task, or a LIBERO "<suite>/<task>"
            envs.append(make_env(**env_kwargs))
        conn.send(("ok", None))
    except Exception:  # noqa: BLE001 - reported to the parent verbatim
        conn.send(("error", (len(envs), traceback.format_exc())))
        for env in envs:
            env.close()
        conn.close()
        return

    # Test-only fault injection (see VectorEnv._inject_fault): seconds to sleep
    # before the next step_chunk, to stand for a hung simulator.
    fault = {"sleep_s": 0.0}

    def step_chunk(items: list[tuple[int, Any]]) -> list[Any]:
        seconds, fault["sleep_s"] = fault["sleep_s"], 0.0
        if seconds > 0:
            time.sleep(seconds)
        return _on_each(envs, items, lambda env, a: env.step_chunk(a[0], record=a[1]))

    def inject_fault(sleep_s: float) -> None:
        fault["sleep_s"] = float(sleep_s)

    handlers: dict[str, Callable[[Any], Any]] = {
        # payloads: one (slot, argument) per env concerned
        "reset": lambda items: _on_each(envs, items, lambda env, a: env.reset(seed=a[0], options=a[1])[0]),
        "step_chunk": step_chunk,
        "privileged_state": lambda items: _on_each(envs, items, lambda env, _: env.privileged_state()),
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
            except _SlotError as exc:
                conn.send(("error", (exc.slot, exc.text)))
            except Exception:  # noqa: BLE001
                conn.send(("error", (None, traceback.format_exc())))
    finally:
        for env in envs:
            env.close()
        conn.close()


def worker_layout(num_envs: int, envs_per_worker: int) -> list[range]:
    """The envs of each worker: ``ceil(num_envs / envs_per_worker)`` workers, in order (worker 0 holds
    the first envs). Even sizes (5 envs at 4 per worker: 3 + 2, not 4 + 1) so that no worker's
    lock-step takes longer than it must. Every backend uses this layout, so a seed gives the same
    episode on any of them."""
    num_workers = math.ceil(num_envs / envs_per_worker)
    base, extra = divmod(num_envs, num_workers)
    sizes = [base + (w < extra) for w in range(num_workers)]
    starts = np.cumsum([0] + sizes).tolist()
    return [range(starts[w], starts[w + 1]) for w in range(num_workers)]


class VectorEnv:
    """``num_envs`` copies of ``RobosuiteEnv(**env_kwargs)`` in ``ceil(num_envs / envs_per_worker)`` processes.

    The envs are spread evenly over the workers, in order (worker 0 holds the
    first ones). Calls fan out to all workers concerned first and then collect
    the answers, so the workers step in parallel. ``step_timeout_s`` bounds
    every answer after start-up, a whole worker's included (None: wait
    forever); ``start_timeout_s`` bounds building one env (a worker building
    several gets as many times that). ``restarts`` counts workers replaced by
    the watchdog.
    """

    def __init__(
        self,
        num_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        start_method: str = "forkserver",
        step_timeout_s: float | None = 120.0,
        start_timeout_s: float | None = 300.0,
        envs_per_worker: int = 1,
    ) -> None:
        for name, value in (("num_envs", num_envs), ("envs_per_worker", envs_per_worker)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if start_method not in ("forkserver", "spawn"):
            # fork would copy a parent's live OpenGL / torch state into workers.
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
        for name, value in (("step_timeout_s", step_timeout_s), ("start_timeout_s", start_timeout_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        self.num_envs = int(num_envs)
        self.envs_per_worker = int(envs_per_worker)
        self.num_workers = math.ceil(self.num_envs / self.envs_per_worker)
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
        # Worker w holds envs _envs_of[w].
        self._envs_of = worker_layout(self.num_envs, self.envs_per_worker)
        self._worker_of = [w for w in range(self.num_workers) for _ in self._envs_of[w]]
        self._closed = False
        self._ctx = mp.get_context(start_method)
        self._conns: list[Connection] = []
        self._procs: list[mp.process.BaseProcess] = []
        # Why worker w's episodes were lost (None: not lost); cleared by reset.
        self._lost: list[str | None] = [None] * self.num_workers
        self._last_obs: list[dict[str, Any] | None] = [None] * self.num_envs
        for w in range(self.num_workers):
            conn, proc = self._spawn(w)
            self._conns.append(conn)
            self._procs.append(proc)
        try:
            # Worker 0 holds the most envs, so its start limit covers every worker.
            self._gather(range(self.num_workers), "start", self._start_limit(0))
        except BaseException:
            self.close()
            raise

    # ----- public API -----

    def reset(self, seeds: list[int | None], options: list[dict | None] | None = None) -> list[dict[str, Any]]:
        """Reset every env, env ``i`` with ``seeds[i]`` (and ``options[i]``); the observations in order.

        A worker lost during reset is replaced and its envs' reset retried, up
        to ``RESET_ATTEMPTS`` tries; reset(seed) alone decides the episode, so
        the retry gives the same observation.
        """
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        seeds = [None if seed is None else int(seed) for seed in seeds]
        options = list(options) if options is not None else [None] * self.num_envs
        if len(options) != self.num_envs:
            raise ValueError(f"need {self.num_envs} reset options, got {len(options)}")
        pending = list(range(self.num_workers))
        obs: list[Any] = [None] * self.num_envs
        for attempt in range(1, RESET_ATTEMPTS + 1):
            sent = [w for w in pending
                    if self._try_send(w, "reset", self._payload(w, self._envs_of[w], lambda i: (seeds[i], options[i])))]
            answers = self._gather_lossy(sent, "reset", self.step_timeout_s)
            failed = [w for w in pending if w not in sent or isinstance(answers.get(w), WorkerLost)]
            for w in pending:
                if w not in failed:
                    for i, o in zip(self._envs_of[w], answers[w]):
                        obs[i] = o
            if not failed:
                break
            if attempt == RESET_ATTEMPTS:
                reasons = "; ".join(f"{self._name(w)}: {self._lost[w]}" for w in failed)
                raise VectorEnvError(f"reset failed {RESET_ATTEMPTS} times, worker lost each time ({reasons})")
            pending = failed
        self._lost = [None] * self.num_workers
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
        # Only active envs travel; the answer lists their results in the same order.
        stepped = [[i for i in self._envs_of[w] if active[i]] for w in range(self.num_workers)]
        sent = []
        for w, envs in enumerate(stepped):
            items = self._payload(w, envs, lambda i: (actions[i], record[i]))
            if items and self._lost[w] is None and self._try_send(w, "step_chunk", items):
                sent.append(w)
        answers = self._gather_lossy(sent, "step_chunk", self.step_timeout_s)
        results: list[StepResult | None] = [None] * self.num_envs
        for w, envs in enumerate(stepped):
            for n, i in enumerate(envs):
                if self._lost[w] is not None:
                    results[i] = self._infra_failure_result(i, record[i])
                else:
                    results[i] = answers[w][n]
                    self._last_obs[i] = results[i][0]
        return results

    def privileged_state(self) -> list[dict[str, np.ndarray] | None]:
        """``RobosuiteEnv.privileged_state()`` of every env (for scripted experts).

        None for an env whose episode was lost (its next step_chunk reports it).
        """
        self._check_open()
        workers = [w for w in range(self.num_workers) if self._lost[w] is None]
        sent = [w for w in workers
                if self._try_send(w, "privileged_state", self._payload(w, self._envs_of[w], lambda i: None))]
        answers = self._gather_lossy(sent, "privileged_state", self.step_timeout_s)
        states: list[dict[str, np.ndarray] | None] = [None] * self.num_envs
        for w in range(self.num_workers):
            if self._lost[w] is None:
                for i, state in zip(self._envs_of[w], answers[w]):
                    states[i] = state
        return states

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

    def _payload(self, w: int, envs: Any, arg: Callable[[int], Any]) -> list[tuple[int, Any]]:
        """Worker ``w``'s message: ``(slot, arg(i))`` for each of its envs ``i`` in ``envs``."""
        first = self._envs_of[w].start
        return [(i - first, arg(i)) for i in envs]

    def _name(self, w: int) -> str:
        """Worker ``w`` in messages, by the envs it holds: 'env 3' or 'envs 4-7'."""
        envs = self._envs_of[w]
        return f"env {envs.start}" if len(envs) == 1 else f"envs {envs.start}-{envs[-1]}"

    def _start_limit(self, w: int) -> float | None:
        # Building is per env: a worker building k envs may take k times as long.
        return None if self.start_timeout_s is None else self.start_timeout_s * len(self._envs_of[w])

    def _spawn(self, w: int) -> tuple[Connection, mp.process.BaseProcess]:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self.env_kwargs, len(self._envs_of[w])),
            name=f"vla-sim-{self._name(w).replace(' ', '-')}",
            daemon=True,
        )
        proc.start()
        child.close()
        return parent, proc

    def _replace_worker(self, w: int, reason: str) -> None:
        """Kill worker ``w``, mark its envs' episodes lost, start a fresh one and wait until it is up."""
        proc = self._procs[w]
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        self._conns[w].close()
        self._lost[w] = reason
        self.restarts += 1
        self._conns[w], self._procs[w] = self._spawn(w)
        # A worker that cannot even be rebuilt is not a transient fault: raise.
        self._recv(w, "start", self._start_limit(w))

    def _inject_fault(self, w: int, sleep_s: float) -> None:
        """Test-only: worker ``w`` sleeps ``sleep_s`` before its next step_chunk."""
        self._send(w, "inject_fault", sleep_s)
        self._gather([w], "inject_fault", self.step_timeout_s)

    def _infra_failure_result(self, i: int, record: bool) -> StepResult:
        info: dict[str, Any] = {
            "is_success": False,
            "steps": 0,
            "rewards": [],
            "infra_failure": True,
            "infra_reason": self._lost[self._worker_of[i]],
        }
        if record:
            info["frames"] = []
        return self._last_obs[i], 0.0, True, True, info

    # ----- transport -----

    def _send(self, w: int, command: str, payload: Any) -> None:
        try:
            self._conns[w].send((command, payload))
        except (BrokenPipeError, OSError) as exc:
            raise VectorEnvError(self._dead_message(w, command)) from exc

    def _try_send(self, w: int, command: str, payload: Any) -> bool:
        """Send, or replace a worker found dead; whether the command went out."""
        try:
            self._conns[w].send((command, payload))
            return True
        except (BrokenPipeError, OSError):
            self._replace_worker(w, self._dead_message(w, command))
            return False

    def _recv(self, w: int, command: str, timeout_s: float | None) -> Any:
        """Worker ``w``'s answer to ``command``.

        WorkerLost if the worker died or stayed silent for ``timeout_s`` (it is
        killed then; the caller replaces it); VectorEnvError if one of its envs
        raised or, during start-up, the worker failed in any way.
        """
        conn = self._conns[w]
        try:
            if not conn.poll(timeout_s):
                self._procs[w].kill()
                self._procs[w].join(timeout=10)
                limit = self._start_limit(w) if command == "start" else self.step_timeout_s
                reason = f"worker did not answer {command!r} within {limit} s; killed"
                if command == "start":
                    raise VectorEnvError(f"{self._name(w)} failed to start: {reason}")
                raise WorkerLost(w, self._name(w), reason)
            status, value = conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            self._procs[w].join(timeout=5)
            reason = self._dead_message(w, command)
            if command == "start":
                raise VectorEnvError(reason) from None
            raise WorkerLost(w, self._name(w), reason) from None
        if status != "ok":
            slot, text = value
            who = self._name(w) if slot is None else f"env {self._envs_of[w][slot]}"
            summary = text.strip().splitlines()[-1] if text.strip() else "unknown error"
            where = "failed to start" if command == "start" else f"raised in {command!r}"
            raise VectorEnvError(f"{who} {where}: {summary}\nworker traceback:\n{text}")
        return value

    def _gather(self, workers: Any, command: str, timeout_s: float | None) -> list[Any]:
        """Answers from ``workers`` in order; reads every answer before raising the first error."""
        answers = self._gather_lossy(workers, command, timeout_s)
        lost = [a for a in answers.values() if isinstance(a, WorkerLost)]
        if lost:
            raise lost[0]
        return [answers[w] for w in workers]

    def _gather_lossy(self, workers: Any, command: str, timeout_s: float | None) -> dict[int, Any]:
        """Answers by worker index, a WorkerLost in place of a lost worker's.

        All workers got the command at about the same time, so one deadline
        covers them all. Lost workers are replaced; a worker's own error is
        raised after every answer is in.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        answers: dict[int, Any] = {}
        first_error: VectorEnvError | None = None
        for w in workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                answers[w] = self._recv(w, command, left)
            except WorkerLost as lost:
                answers[w] = lost
            except VectorEnvError as exc:
                answers[w] = None
                first_error = first_error or exc
        # Replace only after every answer is in: a restart takes seconds, which
        # must not eat into the other workers' deadline.
        for w, answer in answers.items():
            if isinstance(answer, WorkerLost):
                self._replace_worker(w, answer.reason)
        if first_error is not None:
            raise first_error
        return answers

    def _dead_message(self, w: int, command: str) -> str:
        code = self._procs[w].exitcode
        return f"{self._name(w)} worker process is gone during {command!r} (exit code {code})"

    def _per_env_flags(self, flags: list[bool] | None, default: bool, name: str) -> list[bool]:
        if flags is None:
            return [default] * self.num_envs
        if len(flags) != self.num_envs:
            raise ValueError(f"{name} needs {self.num_envs} entries, got {len(flags)}")
        return [bool(f) for f in flags]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("VectorEnv is closed")

"""The Ray backend of the vector env: VectorEnv's interface and lock-step, with Ray actors as workers.

Everything the trainer and the eval runner see is VectorEnv's: ``reset(seeds, options)``,
``step_chunk(actions, record, active)``, ``privileged_state()``, ``num_envs``, ``restarts``, the
context manager; the envs are laid out over the workers the same way (``worker_layout``) and each
worker (ray_env_worker.EnvWorker) steps its envs exactly as a local worker process does. The policy
and its random numbers stay in the driver, so a seed gives the same episodes on either backend.

Fault handling is Ray's. Each actor is created with ``max_restarts``: when its process dies Ray
restarts it (on whichever node has room) and the pending call fails with a RayActorError. A call
that stays unanswered for ``step_timeout_s`` (a hung simulator) is answered by
``ray.kill(actor, no_restart=False)``, which makes Ray restart it the same way. Either is an
infrastructure failure; what happens to the episodes the lost worker held is ``lost_episodes``:

- ``"drop"``: as the local backend, each reports ``info["infra_failure"]`` and ends (the rollout
  engine drops it, the eval runner flags it); never a task failure.
- ``"replay"``: the new worker re-runs each episode from its reset seed with the actions already
  sent (the driver keeps them: a few floats per decision), and the pending call is sent again.
  MuJoCo is deterministic for the same build, so the episode continues bit for bit and the policy
  never notices; the replay's last observation is compared with the one the driver already has,
  and an episode that does not reproduce (other physics on that node) is dropped as above.

Every worker reports its code fingerprint (code_version.py) when it starts, restarts included; a
worker whose fingerprint differs from the driver's is refused with a RayBackendError.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .code_version import code_fingerprint, fingerprint_mismatch
from .ray_connect import RayBackendError, connect, import_ray
from .ray_env_worker import EnvWorker
from .tasks import get_task
from .vector_env import RESET_ATTEMPTS, StepResult, VectorEnvError, WorkerLost, worker_layout

LOST_EPISODES = ("drop", "replay")
SCHEDULING = ("DEFAULT", "SPREAD")


class RayVectorEnv:
    """``num_envs`` envs in ``ceil(num_envs / envs_per_worker)`` Ray actors (see the module docstring).

    ``address``: None starts a local Ray instance, "auto" or "host:port" joins a cluster (a process
    already connected to Ray keeps its connection). ``cpus_per_worker`` is what Ray reserves for each
    actor when placing it; ``scheduling`` is Ray's strategy ("SPREAD" spreads the workers over the
    nodes); ``resources`` are custom Ray resources each worker needs, so that only nodes started with
    them (``ray start --resources='{"sim": 8}'``) take workers; ``max_restarts`` bounds how often Ray restarts one worker before the run stops.
    """

    def __init__(
        self,
        num_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        envs_per_worker: int = 1,
        step_timeout_s: float | None = 120.0,
        start_timeout_s: float | None = 300.0,
        address: str | None = None,
        lost_episodes: str = "drop",
        cpus_per_worker: float = 1.0,
        max_restarts: int = 10,
        scheduling: str = "DEFAULT",
        resources: dict[str, float] | None = None,
        gpus_per_worker: float = 0.0,
        worker_cls: type = EnvWorker,
    ) -> None:
        for name, value in (("num_envs", num_envs), ("envs_per_worker", envs_per_worker)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (("step_timeout_s", step_timeout_s), ("start_timeout_s", start_timeout_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if lost_episodes not in LOST_EPISODES:
            raise ValueError(f"lost_episodes must be one of {', '.join(LOST_EPISODES)}, got {lost_episodes!r}")
        if scheduling not in SCHEDULING:
            raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING)}, got {scheduling!r}")
        if not cpus_per_worker >= 0:
            raise ValueError(f"cpus_per_worker must be >= 0, got {cpus_per_worker!r}")
        if not gpus_per_worker >= 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}")
        resources = dict(resources or {})
        bad = {k: v for k, v in resources.items() if not isinstance(k, str) or not v > 0}
        if bad:
            raise ValueError(f"resources must map names to positive amounts, got {bad}")
        if int(max_restarts) != max_restarts or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        self.num_envs = int(num_envs)
        self.envs_per_worker = int(envs_per_worker)
        self._envs_of = worker_layout(self.num_envs, self.envs_per_worker)
        self.num_workers = len(self._envs_of)
        self._worker_of = [w for w in range(self.num_workers) for _ in self._envs_of[w]]
        self.env_kwargs = dict(env_kwargs or {})
        self.worker_cls = worker_cls  # EnvWorker, or a subclass that does more (vla/rl/ray_rollout.py)
        self.step_timeout_s, self.start_timeout_s = step_timeout_s, start_timeout_s
        self.lost_episodes, self.max_restarts = lost_episodes, int(max_restarts)
        self.restarts = 0
        task = self.env_kwargs.get("task", "lift")
        if isinstance(task, str) and "/" in task:  # fail fast, before Ray starts
            from .libero_env import get_libero_task

            get_libero_task(task)
        else:
            get_task(task)
        self._closed = False
        self._actors: list[Any] = []
        self._ray = import_ray()
        self._disconnect = connect(address)
        self._fingerprint = {**code_fingerprint(), **worker_cls.extra_fingerprint()}
        # Why worker w's episodes were lost (None: not lost); cleared by reset.
        self._lost: list[str | None] = [None] * self.num_workers
        self._last_obs: list[dict[str, Any] | None] = [None] * self.num_envs
        # Each env's episode so far, to replay it on a new worker: (seed, options) and the chunks sent.
        self._episode: list[tuple[tuple[int | None, dict | None], list[np.ndarray]] | None] = [None] * self.num_envs
        try:
            actor_cls = self._ray.remote(worker_cls).options(
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=self.max_restarts, max_task_retries=0,
                scheduling_strategy=scheduling, resources=resources)
            self._actors = [actor_cls.remote(self.env_kwargs, len(envs)) for envs in self._envs_of]
            for w in range(self.num_workers):
                self._await_ready(w, after=None)
        except BaseException:
            self.close()
            raise

    # ----- public API (VectorEnv's) -----

    def reset(self, seeds: list[int | None], options: list[dict | None] | None = None) -> list[dict[str, Any]]:
        """Reset every env, env ``i`` with ``seeds[i]`` (and ``options[i]``); retried on a lost worker."""
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        seeds = [None if seed is None else int(seed) for seed in seeds]
        options = list(options) if options is not None else [None] * self.num_envs
        if len(options) != self.num_envs:
            raise ValueError(f"need {self.num_envs} reset options, got {len(options)}")
        payloads = {w: self._payload(w, self._envs_of[w], lambda i: (seeds[i], options[i]))
                    for w in range(self.num_workers)}
        obs: list[Any] = [None] * self.num_envs
        pending = list(range(self.num_workers))
        for attempt in range(1, RESET_ATTEMPTS + 1):
            answers = self._call(pending, "reset", payloads)
            failed = [w for w in pending if isinstance(answers[w], WorkerLost)]
            for w in pending:
                if w not in failed:
                    for i, o in zip(self._envs_of[w], answers[w]):
                        obs[i] = o
            for w in failed:  # reset(seed) alone decides the episode: a retry gives the same observation
                self._recover(w, answers[w].reason)
            if not failed:
                break
            if attempt == RESET_ATTEMPTS:
                reasons = "; ".join(f"{self._name(w)}: {answers[w].reason}" for w in failed)
                raise VectorEnvError(f"reset failed {RESET_ATTEMPTS} times, worker lost each time ({reasons})")
            pending = failed
        self._lost = [None] * self.num_workers
        self._last_obs = list(obs)
        self._episode = [((seeds[i], options[i]), []) for i in range(self.num_envs)]
        return obs

    def step_chunk(
        self,
        actions: np.ndarray,
        record: list[bool] | None = None,
        active: list[bool] | None = None,
    ) -> list[StepResult | None]:
        """VectorEnv.step_chunk: inactive envs give None; a dropped episode gives an infra-failure result."""
        self._check_open()
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != self.num_envs or actions.shape[2] != 7:
            raise ValueError(f"actions must have shape [{self.num_envs}, H, 7], got {actions.shape}")
        record = self._per_env_flags(record, False, "record")
        active = self._per_env_flags(active, True, "active")
        stepped = [[i for i in self._envs_of[w] if active[i]] for w in range(self.num_workers)]
        payloads = {w: self._payload(w, envs, lambda i: (actions[i], record[i])) for w, envs in enumerate(stepped)}
        sent = [w for w in range(self.num_workers) if payloads[w] and self._lost[w] is None]
        answers = self._call_and_recover(sent, "step_chunk", payloads)
        results: list[StepResult | None] = [None] * self.num_envs
        for w, envs in enumerate(stepped):
            for n, i in enumerate(envs):
                if self._lost[w] is not None:
                    results[i] = self._infra_failure_result(i, record[i])
                else:
                    results[i] = answers[w][n]
                    self._last_obs[i] = results[i][0]
                    self._episode[i][1].append(np.array(actions[i], copy=True))
        return results

    def privileged_state(self) -> list[dict[str, np.ndarray] | None]:
        """VectorEnv.privileged_state: None for an env whose episode was dropped."""
        self._check_open()
        workers = [w for w in range(self.num_workers) if self._lost[w] is None]
        payloads = {w: self._payload(w, self._envs_of[w], lambda i: None) for w in workers}
        answers = self._call_and_recover(workers, "privileged_state", payloads)
        states: list[dict[str, np.ndarray] | None] = [None] * self.num_envs
        for w in range(self.num_workers):
            if self._lost[w] is None:
                for i, state in zip(self._envs_of[w], answers[w]):
                    states[i] = state
        return states

    def close(self) -> None:
        """Stop all workers (idempotent); disconnect from Ray if this env connected (a local instance stops)."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)  # the actor process ends; its envs and renderer with it
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
        if self._disconnect and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> "RayVectorEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_envs

    # ----- test-only fault injection -----

    def _inject_fault(self, w: int, sleep_s: float) -> None:
        """Worker ``w`` sleeps ``sleep_s`` before its next step_chunk (a hung simulator)."""
        self._ray.get(self._actors[w].inject_fault.remote(sleep_s), timeout=self.step_timeout_s)

    def _worker_pid(self, w: int) -> int:
        """Worker ``w``'s process id (to kill it, as a crash would)."""
        return self._ray.get(self._actors[w].pid.remote(), timeout=self.step_timeout_s)

    def worker_nodes(self) -> list[str]:
        """The Ray node id of each worker, in worker order (where Ray placed them)."""
        return self._ray.get([actor.node_id.remote() for actor in self._actors], timeout=self.step_timeout_s)

    # ----- calls, loss and recovery -----

    def _call(self, workers: list[int], command: str, payloads: dict[int, Any]) -> dict[int, Any]:
        """Send ``command`` to ``workers`` at once; answers by worker, a WorkerLost for a lost one.

        (Also the entry point of commands a subclass's worker adds: vla/rl/ray_rollout.py.)

        One deadline covers them all. A worker that does not answer in time is killed so that Ray
        restarts it; an env's own error is raised after every answer is in.
        """
        ray = self._ray
        if not workers:  # e.g. every worker's episodes already dropped
            return {}
        refs = {w: self._actors[w].call.remote(command, payloads[w]) for w in workers}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.step_timeout_s)
        ready = set(ready)
        answers: dict[int, Any] = {}
        first_error: VectorEnvError | None = None
        for w, ref in refs.items():
            if ref not in ready:
                ray.kill(self._actors[w], no_restart=False)
                answers[w] = WorkerLost(w, self._name(w), f"worker did not answer {command!r} within "
                                                          f"{self.step_timeout_s} s; killed")
                continue
            try:
                status, value = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                answers[w] = WorkerLost(w, self._name(w), f"worker actor died during {command!r} "
                                                          f"({type(exc).__name__})")
                continue
            if status != "ok":
                slot, text = value
                who = self._name(w) if slot is None else f"env {self._envs_of[w][slot]}"
                summary = text.strip().splitlines()[-1] if text.strip() else "unknown error"
                first_error = first_error or VectorEnvError(f"{who} raised in {command!r}: {summary}\n"
                                                            f"worker traceback:\n{text}")
                answers[w] = None
                continue
            answers[w] = value
        if first_error is not None:
            for w, answer in answers.items():
                if isinstance(answer, WorkerLost):  # Ray restarts it; with no recovery now, its episodes are gone
                    self._lost[w] = answer.reason
                    self.restarts += 1
            raise first_error
        return answers

    def _call_and_recover(self, workers: list[int], command: str, payloads: dict[int, Any]) -> dict[int, Any]:
        """_call, then each lost worker recovered: its episodes replayed and the call repeated, or dropped."""
        answers = self._call(workers, command, payloads)
        for w in workers:
            attempts = 0
            while isinstance(answers[w], WorkerLost):
                attempts += 1
                self._recover(w, answers[w].reason)
                if self.lost_episodes == "drop" or attempts > RESET_ATTEMPTS:
                    self._lost[w] = answers[w].reason
                    break
                replayed = self._replay(w)
                if replayed is False:  # did not reproduce: _replay has said why in _lost[w]
                    break
                # lost again during the replay: recover and replay once more
                answers[w] = replayed if isinstance(replayed, WorkerLost) else self._call([w], command, payloads)[w]
        return answers

    def _recover(self, w: int, reason: str) -> None:
        """Wait until Ray has restarted worker ``w`` and check it; raise if Ray gave up on it."""
        self.restarts += 1
        self._await_ready(w, after=reason)

    def _await_ready(self, w: int, after: str | None) -> None:
        """Block until worker ``w`` answers ``ready`` and its fingerprint matches the driver's.

        ``after``: why it is being restarted (None at first start).
        """
        ray = self._ray
        limit = None if self.start_timeout_s is None else self.start_timeout_s * len(self._envs_of[w])
        deadline = None if limit is None else time.monotonic() + limit
        tries = 0
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                fingerprint, start_error = ray.get(self._actors[w].ready.remote(), timeout=left)
                break
            except ray.exceptions.ActorUnavailableError:  # still restarting
                if deadline is not None and time.monotonic() >= deadline:
                    raise VectorEnvError(f"{self._name(w)} was not restarted within {limit} s") from None
                time.sleep(0.2)
            except ray.exceptions.GetTimeoutError:
                resources = ray.available_resources()
                raise VectorEnvError(
                    f"{self._name(w)} did not start within {limit} s: Ray could not place the worker or "
                    f"building its envs hung (Ray's free resources now: {resources})") from None
            except ray.exceptions.RayActorError as exc:
                # Right after a kill the call may still reach the dying process: ask again a few times.
                tries += 1
                if after is not None and tries < 10:
                    time.sleep(0.2)
                    continue
                what = (f"lost more than --ray_max_restarts={self.max_restarts} times (last: {after})"
                        if after is not None else "worker actor died while starting")
                raise VectorEnvError(f"{self._name(w)} {what}: {exc}") from None
        mismatch = fingerprint_mismatch(self._fingerprint, fingerprint)
        if mismatch is not None:
            raise RayBackendError(f"{self._name(w)}: the Ray worker runs other code than this driver ({mismatch}); "
                                  "install the same vla-rl checkout and physics versions on every node")
        if start_error is not None:
            slot, text = start_error
            summary = text.strip().splitlines()[-1] if text.strip() else "unknown error"
            raise VectorEnvError(f"env {self._envs_of[w][slot]} failed to start: {summary}\n"
                                 f"worker traceback:\n{text}")

    def _replay(self, w: int) -> bool | WorkerLost:
        """Re-run worker ``w``'s current episodes on its new actor: True if they reproduced, False
        if not (``_lost[w]`` says why), the WorkerLost if the worker was lost again meanwhile."""
        envs = [i for i in self._envs_of[w] if self._episode[i] is not None]
        if not envs:
            return True
        reset = self._call([w], "reset", {w: self._payload(w, envs, lambda i: self._episode[i][0])})[w]
        if isinstance(reset, WorkerLost):
            return reset
        last = dict(zip(envs, reset))
        rounds = max(len(self._episode[i][1]) for i in envs)
        for r in range(rounds):  # lock-step, as the episodes ran: round r steps each env's chunk r
            stepping = [i for i in envs if len(self._episode[i][1]) > r]
            items = self._payload(w, stepping, lambda i: (self._episode[i][1][r], False))
            answer = self._call([w], "step_chunk", {w: items})[w]
            if isinstance(answer, WorkerLost):
                return answer
            last.update((i, result[0]) for i, result in zip(stepping, answer))
        diverged = [i for i in envs if not _same(last[i], self._last_obs[i])]
        if diverged:
            self._lost[w] = (f"replay on the restarted worker did not reproduce the episode of env {diverged[0]} "
                             "(other physics on its node?)")
            return False
        return True

    # ----- helpers (as VectorEnv's) -----

    def _payload(self, w: int, envs: Any, arg: Any) -> list[tuple[int, Any]]:
        first = self._envs_of[w].start
        return [(i - first, arg(i)) for i in envs]

    def _name(self, w: int) -> str:
        envs = self._envs_of[w]
        return f"env {envs.start}" if len(envs) == 1 else f"envs {envs.start}-{envs[-1]}"

    def _infra_failure_result(self, i: int, record: bool) -> StepResult:
        info: dict[str, Any] = {"is_success": False, "steps": 0, "rewards": [], "infra_failure": True,
                                "infra_reason": self._lost[self._worker_of[i]]}
        if record:
            info["frames"] = []
        return self._last_obs[i], 0.0, True, True, info

    def _per_env_flags(self, flags: list[bool] | None, default: bool, name: str) -> list[bool]:
        if flags is None:
            return [default] * self.num_envs
        if len(flags) != self.num_envs:
            raise ValueError(f"{name} needs {self.num_envs} entries, got {len(flags)}")
        return [bool(f) for f in flags]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("RayVectorEnv is closed")


def _same(a: Any, b: Any) -> bool:
    """Exact equality of two observations (dicts of arrays, numbers, strings)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b

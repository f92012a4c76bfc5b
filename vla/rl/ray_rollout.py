"""Policy-holding rollout workers on Ray (`vla rl --backend ray --ray_inference worker`).

With the default placement (``--ray_inference driver``) the Ray actors only step envs and the policy
samples every decision in the driver. Here each actor (``RolloutWorker``, an EnvWorker with a policy)
holds its envs AND a copy of the policy on its node's device (CUDA if the actor sees one, else the
CPU), and runs the rollout engine's own decision loop (RolloutEngine.decision_rounds, the code the
driver runs) for its envs: sampling, the chains' log-probs, values, everything the learner needs.
The driver (``WorkerRolloutEngine``, RolloutEngine's ``collect`` interface) splits the plan of
episodes over the workers as the driver placement lays them over the envs (episode p on env
p mod n_envs), merges what they return in plan order, and never runs a policy for the rollouts.

Weights. The workers build their copy from the driver's modules, put once in Ray's object store.
After each update the driver puts the new state dicts there once, with the policy version (the
learner updates they have seen), and every worker loads them before its next rollout; a worker
restarted by Ray rebuilds its copy and loads the newest weights when its next rollout starts. Every
trajectory carries the version its worker actually held, and the trainer's staleness accounting
(vla/rl/staleness.py, --max_staleness) checks it. The loop is synchronous (collect, update, push),
so the staleness is 0; the version makes a worker that missed a push visible instead of silent.

Randomness. Worker w draws its policy noise from a generator seeded from (run seed, iteration, w):
a run is reproducible with the same seed and the same number of workers, but it is not the driver
placement's run (which draws every decision's noise from one generator in the driver).

Faults: the driver advances each worker's decision loop one round (one batched policy call, one
step of its envs) per Ray call, through RayVectorEnv's call path, so the watchdog is the env
workers' one: a worker that dies or does not answer a round within step_timeout_s is restarted by
Ray, and its episodes are dropped (``lost_episodes="drop"``: left out of the batch, never counted as
failures) or re-run from the start on the restarted worker (``"replay"``: same reset seeds, same
generator seed, so the same episodes again).
"""

from __future__ import annotations

import copy
import hashlib
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla.rl.rollout import RolloutEngine, Rollouts, SamplingSpec, merge_rollouts, rollout_plan
from vla.sim.ray_env_worker import EnvWorker
from vla.sim.vector_env import RESET_ATTEMPTS, VectorEnvError, WorkerLost

MODULES = ("policy", "noise_head", "value_head")
_VLA_DIR = Path(__file__).resolve().parents[1]


def worker_seed(run_seed: int, iteration: int, worker: int) -> int:
    """The seed of worker ``worker``'s policy noise in iteration ``iteration`` of a run seeded ``run_seed``."""
    return int(np.random.SeedSequence([int(run_seed), int(iteration), int(worker)]).generate_state(1)[0])


def rollout_device() -> str:
    """Where a rollout worker puts its policy copy: the GPU its process sees, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _policy_sources_hash() -> str:
    digest = hashlib.sha256()
    for sub in ("policy", "rl"):
        for path in sorted((_VLA_DIR / sub).rglob("*.py")):
            digest.update(path.relative_to(_VLA_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class _WorkerEnvs:
    """VectorEnv's interface over a rollout worker's own envs, stepped in its process one after the other
    (the rollout engine's vec_env inside the worker)."""

    def __init__(self, worker: "RolloutWorker") -> None:
        self.worker, self.num_envs = worker, len(worker.envs)

    def reset(self, seeds, options=None):
        options = options or [None] * self.num_envs
        return [env.reset(seed=s, options=o)[0] for env, s, o in zip(self.worker.envs, seeds, options)]

    def step_chunk(self, actions, record=None, active=None):
        return [env.step_chunk(actions[i], record=bool(record and record[i])) if active is None or active[i]
                else None for i, env in enumerate(self.worker.envs)]


def _to_cpu(rollouts: Rollouts) -> Rollouts:
    """Every tensor of the Rollouts on the CPU (a driver without a GPU can then unpickle them)."""
    for name, value in vars(rollouts).items():
        if isinstance(value, torch.Tensor):
            setattr(rollouts, name, value.cpu())
        elif isinstance(value, dict):
            setattr(rollouts, name, {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in value.items()})
    return rollouts


class RolloutWorker(EnvWorker):
    """An env worker that also holds a policy copy and runs the rollout engine's decision loop for its envs.

    Built with EnvWorker's arguments only, so that Ray can restart it as it is; the policy comes with the
    first rollout (``rollout_start`` names the driver's object-store entries). Its commands go through
    EnvWorker's ``call`` (the driver's RayVectorEnv._call), with the same ``("ok", value)`` / ``("error",
    (None, traceback))`` answers; env commands (reset, step_chunk: the driver-side evaluation) still work.
    """

    COMMANDS = ("rollout_start", "rollout_advance", "load_weights", "weights")

    @staticmethod
    def extra_fingerprint() -> dict[str, str]:
        return {"vla.policy + vla.rl sources": _policy_sources_hash()}

    def __init__(self, env_kwargs: dict[str, Any], n_envs: int) -> None:
        super().__init__(env_kwargs, n_envs)
        self.modules: dict[str, torch.nn.Module | None] | None = None
        self.engine: RolloutEngine | None = None
        self.version: int | None = None
        self.rounds = None  # the running decision loop (a generator)

    def call(self, command: str, items: Any) -> tuple[str, Any]:
        if command not in self.COMMANDS:
            return super().call(command, items)
        try:
            if command == "rollout_advance" and self.fault_sleep_s > 0:  # test-only: a hung simulator
                seconds, self.fault_sleep_s = self.fault_sleep_s, 0.0
                time.sleep(seconds)
            return "ok", getattr(self, "_" + command)(*items)
        except Exception:  # noqa: BLE001 - reported to the driver verbatim
            return "error", (None, traceback.format_exc())

    def _setup(self, setup: list) -> None:
        import ray  # only ever called inside a Ray actor

        spec = ray.get(setup[0])
        device = rollout_device()
        self.modules = {name: None if spec[name] is None else spec[name].to(device).eval().requires_grad_(False)
                        for name in MODULES}
        self.engine = RolloutEngine(self.modules["policy"], _WorkerEnvs(self), spec["sampling"],
                                    self.modules["noise_head"], self.modules["value_head"],
                                    frame_camera=spec["frame_camera"])
        self.version = spec["version"]

    def _load_weights(self, version: int, weights: list) -> int | None:
        """Load the pushed weights unless this copy already holds ``version`` (or none is built yet: it loads
        them when its first rollout starts). ``weights`` wraps the object ref so that Ray does not fetch it
        for a worker that does not need it."""
        if self.modules is None or self.version == version:
            return self.version
        import ray

        pushed_version, state = ray.get(weights[0])
        if pushed_version != version:
            raise RuntimeError(f"the pushed weights are version {pushed_version}, the driver asked for {version}")
        for name, module in self.modules.items():
            if module is not None:
                module.load_state_dict(state[name])
        self.version = pushed_version
        return self.version

    def _rollout_start(self, plan: list, seed: int, version: int, setup: list, weights: list) -> int:
        """Start the decision loop of ``plan`` ((group, reset seed) pairs) with the weights of ``version``."""
        if self.engine is None:
            self._setup(setup)
        if self.version != version:
            if weights[0] is None:
                raise RuntimeError(f"this worker holds policy version {self.version}; version {version} was never pushed")
            self._load_weights(version, weights)
        self.rounds = self.engine.decision_rounds(plan, torch.Generator().manual_seed(seed),
                                                  policy_version=self.version)
        return self.version

    def _rollout_advance(self) -> Rollouts | None:
        """One decision round; None while the loop runs, its Rollouts (on the CPU) when it is done."""
        if self.rounds is None:
            raise RuntimeError("rollout_advance without a running rollout (rollout_start first)")
        try:
            next(self.rounds)
            return None
        except StopIteration as done:
            self.rounds = None
            return _to_cpu(done.value)

    def _weights(self) -> tuple[int | None, dict | None]:
        """This copy's version and state dicts (CPU), for checks."""
        if self.modules is None:
            return self.version, None
        return self.version, {name: {k: v.cpu() for k, v in m.state_dict().items()}
                              for name, m in self.modules.items() if m is not None}


def _cpu_copy(module: torch.nn.Module | None) -> torch.nn.Module | None:
    """The module as it can travel to any node (a CUDA module is copied to the CPU; a CPU one goes as it is)."""
    if module is None:
        return None
    on_cpu = all(t.device.type == "cpu" for t in list(module.parameters()) + list(module.buffers()))
    return module if on_cpu else copy.deepcopy(module).cpu()


def _state_on_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


class WorkerRolloutEngine:
    """RolloutEngine's ``collect`` with the decisions taken on the Ray workers (see the module docstring).

    ``vec_env`` is a RayVectorEnv built with ``worker_cls=RolloutWorker``; ``seed`` is the run seed the
    workers' noise is derived from; ``version`` the policy version of the weights the modules hold now.
    """

    def __init__(self, policy, vec_env, sampling: SamplingSpec, noise_head=None, value_head=None,
                 frame_camera: str | None = None, seed: int = 0, version: int = 0) -> None:
        if not issubclass(getattr(vec_env, "worker_cls", object), RolloutWorker):
            raise TypeError("WorkerRolloutEngine needs a RayVectorEnv built with worker_cls=RolloutWorker "
                            f"(--backend ray --ray_inference worker), got {type(vec_env).__name__}")
        self.vec_env, self._ray = vec_env, vec_env._ray
        self.modules = {"policy": policy, "noise_head": noise_head, "value_head": value_head}
        self.seed, self.version = int(seed), int(version)
        self.dropped_episodes = 0  # in the last collect: episodes of lost workers, left out
        self._setup = self._ray.put({**{name: _cpu_copy(m) for name, m in self.modules.items()},
                                     "sampling": sampling, "frame_camera": frame_camera, "version": self.version})
        self._weights = None  # object ref of the last push: (version, {module: state dict})

    # ----- weights

    def push_weights(self, version: int) -> None:
        """Put the learner's weights (now at ``version`` updates) in the object store once, and have every
        worker load them (a worker lost meanwhile is restarted and loads them when its next rollout starts)."""
        state = {name: _state_on_cpu(m) for name, m in self.modules.items() if m is not None}
        self._weights, self.version = self._ray.put((int(version), state)), int(version)
        workers = list(range(self.vec_env.num_workers))
        answers = self.vec_env._call(workers, "load_weights", {w: (self.version, [self._weights]) for w in workers})
        for w in workers:
            if isinstance(answers[w], WorkerLost):
                self.vec_env._recover(w, answers[w].reason)

    def worker_weights(self) -> list[tuple[int | None, dict | None]]:
        """Each worker's (policy version, state dicts), in worker order (a worker not yet set up: (None, None))."""
        workers = list(range(self.vec_env.num_workers))
        answers = self.vec_env._call(workers, "weights", {w: () for w in workers})
        lost = [w for w in workers if isinstance(answers[w], WorkerLost)]
        if lost:
            raise VectorEnvError(f"worker(s) {lost} lost while reading their weights")
        return [answers[w] for w in workers]

    # ----- rollouts

    def shares(self, n_episodes: int) -> list[list[int]]:
        """The plan positions each worker runs: episode p on env p mod n_envs, as the driver placement's waves."""
        worker_of, n_envs = self.vec_env._worker_of, self.vec_env.num_envs
        out: list[list[int]] = [[] for _ in range(self.vec_env.num_workers)]
        for p in range(n_episodes):
            out[worker_of[p % n_envs]].append(p)
        return out

    def collect(self, group_seeds: list[int], group_size: int, generator: torch.Generator | None = None,
                progress=None, policy_version: int | None = None, iteration: int | None = None) -> Rollouts:
        """RolloutEngine.collect, run by the workers. ``generator`` is not drawn from (each worker seeds its own
        from (seed, iteration, worker); ``iteration`` defaults to ``policy_version``); ``policy_version`` must be
        the version last pushed (or built with): the trajectories carry the version their worker held."""
        version = self.version if policy_version is None else int(policy_version)
        if version != self.version:
            raise ValueError(f"the rollout workers hold policy version {self.version}, collect asked for {version}: "
                             "push_weights after each update")
        iteration = version if iteration is None else int(iteration)
        plan = rollout_plan(group_seeds, group_size)
        shares = self.shares(len(plan))
        vec = self.vec_env
        start_args = {w: ([plan[p] for p in shares[w]], worker_seed(self.seed, iteration, w), self.version,
                          [self._setup], [self._weights]) for w in range(vec.num_workers) if shares[w]}
        running, to_start = set(start_args), sorted(start_args)
        results: dict[int, Rollouts] = {}
        lost_times = dict.fromkeys(start_args, 0)
        dropped: list[int] = []

        def lost(w: int, answer: WorkerLost) -> None:
            vec._recover(w, answer.reason)  # Ray restarted it (or the run stops); the fingerprint is checked again
            lost_times[w] += 1
            if vec.lost_episodes == "drop" or lost_times[w] > RESET_ATTEMPTS:
                running.discard(w)
                dropped.append(w)
            else:  # replay: the whole share again, same seeds, on the restarted worker
                to_start.append(w)

        while running:
            if to_start:
                starting, to_start[:] = list(to_start), []
                answers = vec._call(starting, "rollout_start", start_args)
                for w in starting:
                    if isinstance(answers[w], WorkerLost):
                        lost(w, answers[w])
                continue
            stepping = sorted(running)
            answers = vec._call(stepping, "rollout_advance", {w: () for w in stepping})
            for w in stepping:
                if isinstance(answers[w], WorkerLost):
                    lost(w, answers[w])
                elif answers[w] is not None:
                    results[w] = answers[w]
                    running.discard(w)
                    if progress is not None:
                        for _ in results[w].trajectories:
                            progress()
        self.dropped_episodes = sum(len(shares[w]) for w in dropped)
        if not results:
            raise VectorEnvError(f"every rollout worker was lost ({len(dropped)} of {len(start_args)}): no episode left")
        return merge_rollouts([(shares[w], results[w]) for w in sorted(results)])


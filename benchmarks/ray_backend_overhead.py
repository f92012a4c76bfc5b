"""Rollout throughput of the local and the Ray backend at 1 and 2 workers (issue 23).

Three workloads, one env per worker, 8-action chunks as `vla rl` steps them:

    envs          random actions, state-only Lift (no camera): the env side alone, where a
                  backend's per-call overhead weighs most
    state_policy  `RolloutEngine.collect` (SDE sampling, as RL) with a state_flow policy (the
                  default MLP config, untrained), state-only Lift
    vla           the same with the tiny flow VLA on Lift's 64 px agentview camera

Each round times, for each workload and worker count, the local backend and then the Ray backend
(interleaved, so a change in the machine's load does not land on one backend only); the report
gives medians over rounds of env steps/s, of the ray/local ratio, and the scaling efficiency of 2
workers (rate(2) / (2 * rate(1))). Ray runs on one local instance started once, as
`vla rl --backend ray` does without an address; start-up (Ray's and the workers') is not timed.

With --worker-inference the policy workloads also time `--ray_inference worker`: Ray actors that hold
a policy copy and sample their own envs' decisions (vla/rl/ray_rollout.py), column "ray worker".

Usage: python benchmarks/ray_backend_overhead.py [--workloads envs state_policy vla] [--workers 1 2]
       [--chunks 60] [--rounds 3] [--worker-inference]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import untrained_policy  # noqa: E402  (benchmarks/common.py)

CHUNK = 8
STATE_ENV = {"task": "lift", "cameras": (), "max_episode_steps": 1_000_000}  # no truncation in a timed loop
EPISODE_STEPS = 80  # policy workloads: two waves of 80-step episodes per measurement


def env_rate(vec_env, chunks: int, seed: int) -> float:
    """Env steps per second of ``chunks`` lock-step chunks of random actions (after an untimed one)."""
    n = vec_env.num_envs
    acts = np.random.default_rng(seed).uniform(-0.5, 0.5, (chunks + 1, n, CHUNK, 7)).astype(np.float32)
    vec_env.reset(list(range(n)))
    vec_env.step_chunk(acts[0])  # first-call costs are not throughput
    start = time.perf_counter()
    for a in acts[1:]:
        vec_env.step_chunk(a)
    return chunks * n * CHUNK / (time.perf_counter() - start)


def make_policy(kind: str):
    return untrained_policy(kind == "state_policy", CHUNK).eval()


def rollout_rate(policy, vec_env, seed: int, on_workers: bool = False) -> float:
    """Env steps per second of RolloutEngine.collect over two waves of episodes (after an untimed wave);
    on_workers: WorkerRolloutEngine.collect, the decisions taken by the Ray actors' policy copies."""
    from vla.rl.ray_rollout import WorkerRolloutEngine
    from vla.rl.rollout import RolloutEngine, SamplingSpec

    engine = (WorkerRolloutEngine(policy, vec_env, SamplingSpec(), seed=seed) if on_workers
              else RolloutEngine(policy, vec_env, SamplingSpec()))
    n = vec_env.num_envs
    engine.collect([seed], n, torch.Generator().manual_seed(seed))  # warm-up wave
    start = time.perf_counter()
    rollouts = engine.collect([seed + 1, seed + 2], n, torch.Generator().manual_seed(seed))
    return rollouts.env_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["envs", "state_policy", "vla"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker-inference", action="store_true",
                        help="also time policy workloads with the policy on the Ray actors (--ray_inference worker)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    from vla.config import EnvConfig
    from vla.eval.evaluate import env_kwargs_for
    from vla.sim import VectorEnv
    from vla.rl.ray_rollout import RolloutWorker
    from vla.sim.ray_connect import start_local
    from vla.sim.ray_vector_env import RayVectorEnv

    def policy_workers(n, env_kwargs):
        return RayVectorEnv(n, env_kwargs, worker_cls=RolloutWorker)

    setups = {}
    for kind in args.workloads:
        if kind == "envs":
            setups[kind] = (None, STATE_ENV)
        else:
            policy = make_policy(kind)
            env_cfg = EnvConfig()
            env_cfg.max_episode_steps = EPISODE_STEPS
            setups[kind] = (policy, env_kwargs_for(policy, env_cfg))
    start_local(ray, num_cpus=max(args.workers))
    rates: dict[tuple[str, str, int], list[float]] = {}
    try:
        for r in range(args.rounds):
            for kind, (policy, env_kwargs) in setups.items():
                for w in args.workers:
                    row = {}
                    backends = [("local", VectorEnv), ("ray", RayVectorEnv)]
                    if args.worker_inference and policy is not None:
                        backends.append(("ray worker", policy_workers))
                    for backend, cls in backends:
                        with cls(w, env_kwargs) as env:
                            row[backend] = (env_rate(env, args.chunks, r) if policy is None
                                            else rollout_rate(policy, env, 1000 * r, backend == "ray worker"))
                        rates.setdefault((kind, backend, w), []).append(row[backend])
                    extra = (f", ray worker {row['ray worker']:.0f} (/local {row['ray worker'] / row['local']:.3f})"
                             if "ray worker" in row else "")
                    print(f"round {r}: {kind}, {w} worker(s): local {row['local']:.0f}, ray {row['ray']:.0f} "
                          f"env steps/s (ray/local {row['ray'] / row['local']:.3f}){extra}", flush=True)
    finally:
        ray.shutdown()
    print(f"\n{platform.node()}, {os.cpu_count()} CPUs, ray {ray.__version__}, torch threads 1, "
          f"{args.rounds} rounds (medians)")
    print("| workload | workers | local env steps/s | ray env steps/s | ray / local (per round) |")
    print("|---|---|---|---|---|")
    for kind in setups:
        for w in args.workers:
            local, remote = rates[(kind, "local", w)], rates[(kind, "ray", w)]
            ratios = [b / a for a, b in zip(local, remote)]
            print(f"| {kind} | {w} | {statistics.median(local):.0f} | {statistics.median(remote):.0f} | "
                  f"{statistics.median(ratios):.3f} ({', '.join(f'{x:.2f}' for x in ratios)}) |")
    if 1 in args.workers and 2 in args.workers:
        print("\nscaling efficiency of 2 workers, rate(2) / (2 * rate(1)):")
        for kind in setups:
            eff = {b: statistics.median(rates[(kind, b, 2)]) / (2 * statistics.median(rates[(kind, b, 1)]))
                   for b in ("local", "ray")}
            print(f"  {kind}: local {eff['local']:.2f}, ray {eff['ray']:.2f}")
    worker_rows = [(kind, w) for kind in setups for w in args.workers if (kind, "ray worker", w) in rates]
    if worker_rows:
        print("\n| workload | workers | ray worker env steps/s | ray worker / local | ray worker / ray (driver) |")
        print("|---|---|---|---|---|")
        for kind, w in worker_rows:
            local, drv, wrk = (rates[(kind, b, w)] for b in ("local", "ray", "ray worker"))
            print(f"| {kind} | {w} | {statistics.median(wrk):.0f} | "
                  f"{statistics.median([c / a for a, c in zip(local, wrk)]):.3f} | "
                  f"{statistics.median([c / b for b, c in zip(drv, wrk)]):.3f} |")
        if 1 in args.workers and 2 in args.workers:
            for kind in {k for k, _ in worker_rows}:
                eff = statistics.median(rates[(kind, "ray worker", 2)]) / (2 * statistics.median(rates[(kind, "ray worker", 1)]))
                print(f"  scaling efficiency of 2 workers, ray worker, {kind}: {eff:.2f}")


if __name__ == "__main__":
    main()

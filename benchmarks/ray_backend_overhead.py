"""Env steps per second of the local and the Ray backend at the same worker count (issue 23).

Both backends step the same state-only Lift envs (no camera: the case where per-call overhead
weighs most) in lock-step chunks of 8 random actions, one env per worker, as `vla rl` does. Each
round times local, then Ray, for each worker count, and the report gives the median over rounds of
each rate and of the ray/local ratio; interleaving keeps a change in the machine's load from
landing on one backend only. Ray runs on one local instance started once (as `vla rl --backend ray`
does when given no address); its start-up and the actors' start are not timed, as VectorEnv's
process start is not.

Usage: python benchmarks/ray_backend_overhead.py [--workers 1 2] [--chunks 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

CHUNK = 8
ENV = {"task": "lift", "cameras": (), "max_episode_steps": 1_000_000}  # no truncation inside a timed loop


def rate(vec_env, chunks: int, seed: int = 0) -> float:
    """Env steps per second of ``chunks`` lock-step chunks over all envs (after one untimed chunk)."""
    n = vec_env.num_envs
    acts = np.random.default_rng(seed).uniform(-0.5, 0.5, (chunks + 1, n, CHUNK, 7)).astype(np.float32)
    vec_env.reset(list(range(n)))
    vec_env.step_chunk(acts[0])  # warm-up: first-call costs (imports, caches) are not throughput
    start = time.perf_counter()
    for a in acts[1:]:
        vec_env.step_chunk(a)
    return chunks * n * CHUNK / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray

    from vla.sim import VectorEnv
    from vla.sim.ray_vector_env import RayVectorEnv

    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    try:
        rates: dict[tuple[str, int], list[float]] = {}
        ratios: dict[int, list[float]] = {}
        for r in range(args.rounds):
            for w in args.workers:
                with VectorEnv(w, ENV) as env:
                    local = rate(env, args.chunks, seed=r)
                with RayVectorEnv(w, ENV) as env:
                    remote = rate(env, args.chunks, seed=r)
                rates.setdefault(("local", w), []).append(local)
                rates.setdefault(("ray", w), []).append(remote)
                ratios.setdefault(w, []).append(remote / local)
                print(f"round {r}: {w} worker(s): local {local:.0f}, ray {remote:.0f} env steps/s "
                      f"(ray/local {remote / local:.3f})", flush=True)
    finally:
        ray.shutdown()
    print(f"\n{platform.node()}, {os.cpu_count()} CPUs, ray {ray.__version__}, {args.chunks} chunks of {CHUNK} "
          f"per env, {args.rounds} rounds (medians)")
    print("| workers | local env steps/s | ray env steps/s | ray / local |")
    print("|---|---|---|---|")
    for w in args.workers:
        print(f"| {w} | {statistics.median(rates[('local', w)]):.0f} | {statistics.median(rates[('ray', w)]):.0f} | "
              f"{statistics.median(ratios[w]):.3f} (rounds: {', '.join(f'{x:.3f}' for x in ratios[w])}) |")


if __name__ == "__main__":
    main()

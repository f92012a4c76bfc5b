"""Learner step time of the on-policy update on 1 and 2 processes (vla/rl/distributed.py, issue 23).

One batch of real Lift rollouts is collected once (state_flow policy on state-only Lift, or the tiny
flow VLA on the 64 px camera); then `grpo_update` (2 epochs, minibatches of 64) runs on it, timed,
in one process and in 2 gloo processes on the CPU (torch.multiprocessing spawn, one torch thread
each), each process computing its half of every minibatch and the gradients summed once per
optimizer step. Reported: the median update time over repeats and the speed-up of 2 processes.

Usage: python benchmarks/learner_data_parallel.py [--policies state vla] [--episodes 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import untrained_policy  # noqa: E402  (benchmarks/common.py)

CHUNK = 8


def make_policy(kind: str):
    return untrained_policy(kind == "state", CHUNK)


def collect(policy, episodes: int):
    from vla.config import EnvConfig
    from vla.eval.evaluate import env_kwargs_for
    from vla.rl.rollout import RolloutEngine, SamplingSpec
    from vla.sim import VectorEnv

    env_cfg = EnvConfig()
    env_cfg.max_episode_steps = 80
    with VectorEnv(2, env_kwargs_for(policy, env_cfg)) as vec_env:
        engine = RolloutEngine(policy.eval(), vec_env, SamplingSpec())
        return engine.collect(list(range(episodes // 4)), 4, torch.Generator().manual_seed(0))


def timed_updates(policy, rollouts, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` GRPO updates, each from the same starting weights."""
    from vla.config import RLConfig
    from vla.rl.grpo import grpo_update
    from vla.rl.rollout import SamplingSpec
    from vla.rl.update import UpdateContext

    cfg = RLConfig(epochs=2, minibatch_size=64, dynamic_sampling=False)
    times = []
    for _ in range(repeats):
        model = copy.deepcopy(policy).train()
        params = list(model.parameters())
        ctx = UpdateContext(model, torch.optim.AdamW(params, lr=1e-5), params, SamplingSpec(), 0,
                            torch.Generator().manual_seed(1))
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        grpo_update(ctx, rollouts, cfg)
        if dist.is_initialized():
            dist.barrier()
        times.append(time.perf_counter() - start)
    return times


def worker(rank: int, world: int, path: str, repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}.init", rank=rank, world_size=world)
    try:
        policy, rollouts = torch.load(path, weights_only=False)
        times = timed_updates(policy, rollouts, repeats)
        if rank == 0:
            torch.save(times, out)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=["state", "vla"])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for kind in args.policies:
        policy = make_policy(kind)
        rollouts = collect(policy, args.episodes)
        one = statistics.median(timed_updates(policy, rollouts, args.repeats))
        with tempfile.TemporaryDirectory() as tmp:
            path, out = os.path.join(tmp, "batch.pt"), os.path.join(tmp, "times.pt")
            torch.save((policy, rollouts), path)
            mp.spawn(worker, args=(2, path, args.repeats, out), nprocs=2, join=True)
            two = statistics.median(torch.load(out))
        rows.append((kind, len(rollouts), one, two))
        print(f"{kind}: {len(rollouts)} decisions, 1 process {one:.2f} s, 2 processes {two:.2f} s", flush=True)
    print(f"\n{os.cpu_count()} CPUs, torch threads 1 per process, grpo_update: 2 epochs, minibatch 64 (medians of "
          f"{args.repeats})")
    print("| policy | decisions | 1 process (s) | 2 processes (s) | speed-up |")
    print("|---|---|---|---|---|")
    for kind, n, one, two in rows:
        print(f"| {kind} | {n} | {one:.2f} | {two:.2f} | {one / two:.2f}x |")


if __name__ == "__main__":
    main()

"""Env steps per second of a real state policy's rollouts, against robosuite's physics-only rate.

Both are measured in one run on the same task with the same worker counts:
    physics        ``step_physics`` in N processes, no policy, no rendering (sim_throughput.py's mode)
    eval           ``vla eval``'s rollout loop (VectorEnv, N workers x K envs each stepped in lock-step,
                   the state policy's ODE chunks; per-episode policy calls, the deterministic default)
    eval_batched   the same with one batched policy call per wave (``--batched_inference``)
    rl_rollout     the RL rollout engine (Flow-SDE chains with log-probs) as `vla rl` collects them

    python benchmarks/state_rollout_throughput.py --policy P --task lift --workers 1 2 --envs-per-worker 1 4 16

Each rate counts executed env steps over the wall time of the loop (env start-up excluded). Every
measurement runs whole waves of N x K episodes, at least --episodes of them. The machine's other load
changes wall-clock rates; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402  (benchmarks/common.py)
from sim_throughput import run_workers  # noqa: E402

from vla.eval.runner import run_episodes  # noqa: E402
from vla.policy.registry import load_policy  # noqa: E402
from vla.policy.sampling import sample_chain  # noqa: E402,F401  (imported so its cost is not timed)
from vla.rl.rollout import RolloutEngine, SamplingSpec  # noqa: E402
from vla.sim import VectorEnv  # noqa: E402


def eval_rate(policy, venv: VectorEnv, episodes: int, batched: bool) -> float:
    start = time.perf_counter()
    results = run_episodes(policy, venv, episodes, seed=100_000, progress=False, batched_inference=batched)
    return sum(e.steps for e in results) / (time.perf_counter() - start)


def rl_rate(policy, venv: VectorEnv, episodes: int) -> float:
    engine = RolloutEngine(policy, venv, SamplingSpec("sde", "mixed", 0.5))
    start = time.perf_counter()
    groups = [1_000_000 + g for g in range(max(1, episodes // 2))]
    rollouts = engine.collect(groups, 2, torch.Generator().manual_seed(0))
    return rollouts.env_steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, help="a state_flow checkpoint")
    p.add_argument("--task", default="lift")
    p.add_argument("--max-episode-steps", type=int, default=200)
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--envs-per-worker", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument("--episodes", type=int, default=8, help="at least this many per measurement (whole waves)")
    p.add_argument("--physics-steps", type=int, default=2000)
    p.add_argument("--json", default=str(RESULTS / "state_rollout_throughput.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    policy = load_policy(a.policy)
    if policy.config.cameras:
        raise SystemExit(f"{a.policy} reads cameras {policy.config.cameras}: this benchmark is for state policies")
    env_kwargs = {"task": a.task, "cameras": (), "max_episode_steps": a.max_episode_steps}
    rows = []
    for n in a.workers:
        physics = run_workers(dict(env_kwargs, max_episode_steps=10**6), n, ("physics",), a.physics_steps)["physics"]
        for k in a.envs_per_worker:
            episodes = n * k * math.ceil(a.episodes / (n * k))  # whole waves: a partial one idles envs
            with VectorEnv(n * k, env_kwargs, envs_per_worker=k) as venv:
                row = {"workers": n, "envs_per_worker": k, "episodes": episodes, "physics": physics["aggregate"],
                       "eval": eval_rate(policy, venv, episodes, batched=False),
                       "eval_batched": eval_rate(policy, venv, episodes, batched=True),
                       "rl_rollout": rl_rate(policy, venv, episodes)}
            rows.append(row)
            print(json.dumps(row))
    write_json(a.json, a, rows=rows)
    print("| workers | envs per worker | physics only | eval (per-episode calls) | eval (batched) | RL rollouts |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]:.0f} ({100 * r[k] / r['physics']:.0f}%)" for k in ("eval", "eval_batched", "rl_rollout")]
        print(f"| {r['workers']} | {r['envs_per_worker']} | {r['physics']:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

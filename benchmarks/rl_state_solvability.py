"""Which Lift initial states can on-policy RL learn from? Per state, G rollouts under each sampler.

A GRPO group with binary reward carries signal only if its rollouts disagree, and PPO's advantage
on a state is only as informative as the spread of its outcomes. This runs G rollouts from each of
N initial states (the training distribution, not the evaluation seeds) and counts states where
all G failed, all succeeded, or the outcomes were mixed. Two figures follow from the counts:
- "signal share": the share of states whose group has any binary signal (mixed);
- "reachable": the success rate if RL turned every mixed state into a success and nothing
  else, the ceiling for learning that only sharpens what exploration already finds.

    python benchmarks/rl_state_solvability.py --policy SFT --samplers ode sde:1.0:2 --states 24 --group-size 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402  (benchmarks/common.py)
from rl_sampling_modes import sampler  # noqa: E402

from vla.policy.registry import load_policy  # noqa: E402
from vla.rl.rollout import RolloutEngine  # noqa: E402
from vla.sim import VectorEnv  # noqa: E402


def outcome_counts(successes: list[list[bool]]) -> dict:
    """Per-state success lists -> the shares of all-fail, all-success and mixed states."""
    n = len(successes)
    wins = [sum(s) for s in successes]
    all_fail = sum(w == 0 for w in wins)
    all_success = sum(w == len(s) for w, s in zip(wins, successes))
    mixed = n - all_fail - all_success
    return {"states": n, "success_rate": sum(wins) / sum(len(s) for s in successes),
            "all_fail": all_fail / n, "all_success": all_success / n, "signal_share": mixed / n,
            "reachable": (all_success + mixed) / n, "wins_per_state": wins}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--task", default="lift")
    parser.add_argument("--max-episode-steps", type=int, default=200)
    parser.add_argument("--samplers", nargs="+", default=["ode", "sde:0.5"])
    parser.add_argument("--states", type=int, default=24)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=3_000_000, help="training-distribution seeds")
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = load_policy(args.policy).eval()
    env_kwargs = dict(task=args.task, cameras=tuple(policy.config.cameras), image_size=policy.config.image_size,
                      max_episode_steps=args.max_episode_steps, control_freq=20)
    seeds = [args.first_seed + i for i in range(args.states)]
    rows = []
    with VectorEnv(args.n_envs, env_kwargs) as env:
        for name in args.samplers:
            spec, head = sampler(policy, name)
            rollouts = RolloutEngine(policy, env, spec, noise_head=head).collect(
                seeds, args.group_size, torch.Generator().manual_seed(0))
            per_state = [[] for _ in seeds]
            for t in rollouts.trajectories:
                per_state[t.group].append(t.success)
            row = {"sampler": name, "group_size": args.group_size, "env_steps": rollouts.env_steps,
                   **outcome_counts(per_state)}
            rows.append(row)
            print(f"{name:>10}: success {row['success_rate']:.1%}; states all-fail {row['all_fail']:.0%}, "
                  f"all-success {row['all_success']:.0%}, mixed {row['signal_share']:.0%}; "
                  f"reachable {row['reachable']:.0%}; wins per state {row['wins_per_state']}", flush=True)
    if args.json:
        write_json(args.json, args, rows=rows)


if __name__ == "__main__":
    main()

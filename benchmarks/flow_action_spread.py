"""How much of its initial noise a flow policy passes through to its actions, at fresh states.

At each of a few training-distribution initial states: sample the deployed ODE's chunk from N
noise draws, report the per-dimension variance of the normalised actions (the prior's is 1; a
policy that knows what to do there is near 0) and the flow-matching loss of the policy on its own
samples (the floor a fine-tuning on them starts from).

    python benchmarks/flow_action_spread.py --policy P [--task lift] [--states 3] [--draws 32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402  (benchmarks/common.py)

from vla.policy.flow_matching_policy import ACTION_KEY, PAD_KEY  # noqa: E402
from vla.policy.observation import observations_to_batch  # noqa: E402
from vla.policy.registry import load_policy  # noqa: E402
from vla.sim import VectorEnv  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--task", default="lift")
    parser.add_argument("--states", type=int, default=3)
    parser.add_argument("--draws", type=int, default=32)
    parser.add_argument("--first-seed", type=int, default=5_000_000, help="training-distribution states")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = load_policy(args.policy).eval()
    cameras = list(policy.config.cameras)
    env_kwargs = dict(task=args.task, cameras=tuple(cameras), image_size=policy.config.image_size)
    rows = []
    with VectorEnv(1, env_kwargs) as env, torch.no_grad():
        for seed in range(args.first_seed, args.first_seed + args.states):
            obs = env.reset([seed])
            batch = observations_to_batch([obs[0]] * args.draws, cameras)
            actions = policy.sample_actions(batch)  # normalised [draws, H, A]
            variance = actions.var(0).mean(0)  # per action dimension, averaged over the chunk's rows
            own = {**batch, ACTION_KEY: policy.normalizer.unnormalize(ACTION_KEY, actions),
                   PAD_KEY: torch.zeros(actions.shape[:2], dtype=torch.bool)}
            loss = float(policy(own)[0])
            rows.append({"seed": seed, "variance_per_dim": [round(float(v), 4) for v in variance],
                         "mean_variance": float(variance.mean()), "loss_on_own_samples": loss})
            print(f"state {seed}: normalised action variance per dim {[round(float(v), 2) for v in variance]} "
                  f"(mean {float(variance.mean()):.2f}), flow-matching loss on its own samples {loss:.2f}")
    if args.json:
        write_json(args.json, args, rows=rows)


if __name__ == "__main__":
    main()

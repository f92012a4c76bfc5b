"""Self-imitation (Lift by default): fine-tune the SFT policy on its own successful rollouts, round after round.

The cheapest use of reward there is (filtered behaviour cloning, "expert iteration"): run the
deployed ODE policy from fresh training states, keep the successful episodes, fine-tune on every
success so far with the SFT flow-matching loss, evaluate on the fixed protocol, repeat. It asks
whether the policy is short of examples of its own good behaviour; if it were, RL's
credit assignment would have something cheap to work with.

Training targets per stored decision: the executed rows of its chunk and, for the rows the policy
did not execute, the next decision's executed rows (padded after the episode's last decision), i.e.
the 16 actions that actually followed that observation. Images get the SFT's random shift.

    python benchmarks/rl_self_imitation.py --policy SFT --rounds 3 --states 48 --seed 0 --json OUT.json \
        [--demos SFT_DATASET]   # keep the demos in every round's fine-tuning set
        [--milestone 0.37]      # and the approach and grasp of failures that grasped and lifted
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402  (benchmarks/common.py)

from vla.eval.runner import run_episodes  # noqa: E402
from vla.policy.flow_matching_policy import ACTION_KEY, IMAGE_PREFIX, PAD_KEY  # noqa: E402
from vla.policy.registry import load_policy  # noqa: E402
from vla.rl.filtered_bc import DemoFrames, followed_actions  # noqa: E402
from vla.rl.rollout import RolloutEngine, Rollouts, SamplingSpec  # noqa: E402
from vla.sim import VectorEnv  # noqa: E402
from vla.train.augment import random_shift  # noqa: E402


def milestone_prefix(rollouts: Rollouts, traj, threshold: float, chunk_steps: int, sustain: int = 3) -> list[int]:
    """The decisions of a failed trajectory up to the first one that starts `sustain` decisions in a row
    whose staged dense reward (per step, averaged over the chunk's chunk_steps) is at least `threshold`,
    plus the sustain - 1 after it; [] if it never gets there. With robosuite's staged rewards (grasp
    0.35, lift 0.35-0.5) a threshold just above 0.35 marks "grasped and lifting": the approach and
    grasp of an episode that failed later. (A failure runs to the time limit, so its chunks are whole.)"""
    per_step = [float(rollouts.env_rewards[i]) / chunk_steps for i in traj.decisions]
    for t in range(len(per_step) - sustain + 1):
        if all(r >= threshold for r in per_step[t:t + sustain]):
            return traj.decisions[: t + sustain]
    return []


def successful_examples(policy, rollouts: Rollouts, milestone: float | None = None) -> tuple[dict[str, list], int]:
    """Per decision of every successful trajectory: observation and the chunk of actions that followed
    (vla/rl/filtered_bc.py's targets, which `vla rl --algo filtered_bc` trains on). With `milestone`,
    failed trajectories that reached it add their decisions up to there (milestone_prefix); the second
    value counts them."""
    targets, pads = followed_actions(policy, rollouts, policy.config.n_action_steps)
    keys = [k for k in rollouts.observations if k != "task"]
    out: dict[str, list] = {k: [] for k in keys + [ACTION_KEY, PAD_KEY, "task"]}
    prefixes = 0
    for traj in rollouts.trajectories:
        if traj.success:
            kept = traj.decisions
        elif milestone is not None:
            kept = milestone_prefix(rollouts, traj, milestone, policy.config.n_action_steps)
            prefixes += bool(kept)
        else:
            continue
        for i in kept:
            for k in keys:
                out[k].append(rollouts.observations[k][i])
            out[ACTION_KEY].append(targets[i])
            out[PAD_KEY].append(pads[i])
            out["task"].append(rollouts.observations["task"][i])
    return out, prefixes


def demo_examples(root: str, policy, keys: list[str]) -> dict[str, list]:
    """Every frame of a LeRobot dataset as an example (its observation keys, action chunk, padding and task)."""
    demos = DemoFrames(root, policy)
    batch = demos.frames(list(range(len(demos))), keys)
    return {k: list(v) for k, v in batch.items()}


def fine_tune(policy, data: dict[str, list], steps: int, lr: float, batch_size: int, image_shift: int,
              generator: torch.Generator) -> tuple[float, float]:
    """A fresh AdamW on the flow-matching loss over data (every success so far, so earlier rounds' examples
    are revisited); returns the mean loss of the first and last 20 steps."""
    tensors = {k: torch.stack(v) for k, v in data.items() if k != "task"}
    n = len(data["task"])
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=1e-4)
    policy.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        batch = {k: v[idx] for k, v in tensors.items()}
        for k in batch:
            if k.startswith(IMAGE_PREFIX):
                batch[k] = random_shift(batch[k], image_shift, generator)
        batch["task"] = [data["task"][i] for i in idx.tolist()]
        loss, _ = policy(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    policy.eval()
    return float(np.mean(losses[:20])), float(np.mean(losses[-20:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--task", default="lift")
    parser.add_argument("--max-episode-steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--states", type=int, default=48, help="fresh training states (one rollout each) per round")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps per round")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-envs", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--eval-seed", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate after every k-th round (and the last)")
    parser.add_argument("--save", help="save the final policy here")
    parser.add_argument("--demos", help="a LeRobot dataset (the SFT demos) kept in every round's fine-tuning set")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--milestone", type=float, default=None,
                        help="also imitate failed episodes up to where their staged dense reward first stays at or "
                             "above this for 3 decisions (0.37 on robosuite pick tasks: grasped and lifting)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    policy = load_policy(args.policy).eval()
    env_kwargs = dict(task=args.task, cameras=tuple(policy.config.cameras), image_size=policy.config.image_size,
                      max_episode_steps=args.max_episode_steps, control_freq=20,
                      reward_shaping=args.milestone is not None)
    generator = torch.Generator().manual_seed(args.seed)
    data: dict[str, list] = {}
    n_demo_frames = 0
    rows = []
    with VectorEnv(args.n_envs, env_kwargs) as env:
        for r in range(args.rounds):
            start = time.perf_counter()
            seeds = [5_000_000 + args.seed * 100_000 + r * args.states + i for i in range(args.states)]
            rollouts = RolloutEngine(policy, env, SamplingSpec("ode")).collect(seeds, 1, generator)
            if args.demos and not data:
                keys = [k for k in rollouts.observations if k != "task"]
                data = demo_examples(args.demos, policy, keys)
                n_demo_frames = len(data["task"])
            examples, prefixes = successful_examples(policy, rollouts, args.milestone)
            for k, v in examples.items():
                data.setdefault(k, []).extend(v)
            rollout_s = time.perf_counter() - start
            first, last = fine_tune(policy, data, args.steps, args.lr, args.batch_size, 4, generator)
            evaluate = (r + 1) % args.eval_every == 0 or r + 1 == args.rounds
            episodes = run_episodes(policy, env, args.eval_episodes, args.eval_seed, progress=False) if evaluate else []
            row = {"round": r, "rollout_success": float(rollouts.trajectory_success().mean()),
                   "milestone_prefixes": prefixes,
                   "examples": len(data["task"]) - n_demo_frames, "demo_frames": n_demo_frames,
                   "env_steps": rollouts.env_steps, "loss_first": first, "loss_last": last,
                   "eval_success": float(np.mean([e.success for e in episodes])) if episodes else None,
                   "rollout_s": rollout_s, "round_s": time.perf_counter() - start}
            rows.append(row)
            evaluation = f"evaluation {row['eval_success']:.0%}" if episodes else "no evaluation"
            print(f"round {r}: rollouts {row['rollout_success']:.0%} success, {row['examples']} examples "
                  f"(+{n_demo_frames} demo frames), loss {first:.3f} -> {last:.3f}, {evaluation} "
                  f"({row['round_s']:.0f} s)", flush=True)
            if args.json:  # after every round: a long run that dies keeps what it measured
                write_json(args.json, args, rows=rows)
    if args.save:
        policy.save_pretrained(args.save)
    if args.json:
        write_json(args.json, args, rows=rows)


if __name__ == "__main__":
    main()

"""Success of policies on fixed Lift initial states under several samplers, paired.

Every (policy, sampler) pair runs the same initial states with the same random
generator, so the differences between policies are paired rather than two
independent evaluations. Samplers: `ode` (the deployed policy), `sde:<noise
level>[:<mixed_steps>]` (Flow-SDE, mixed mode, the stochastic step among
the first mixed_steps denoising steps; all of them when left out), `joint:<noise level>`
(Flow-SDE, every step stochastic), `noise` (Flow-Noise with a fresh head at the
geometric mean of its bounds, mixed mode). Shows whether RL improved the
sampler it was trained with, the deployed ODE policy, or neither.

    python benchmarks/rl_sampling_modes.py --policies SFT RL1 RL2 --samplers ode sde:0.5 --states 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402  (benchmarks/common.py)

from vla.policy.registry import load_policy  # noqa: E402
from vla.policy.sampling import NoiseHead  # noqa: E402
from vla.rl.rollout import RolloutEngine, SamplingSpec  # noqa: E402
from vla.sim import VectorEnv  # noqa: E402


def sampler(policy, name: str):
    mode, _, rest = name.partition(":")
    level, _, mixed_steps = rest.partition(":")
    if mode == "noise":
        return SamplingSpec("noise", "mixed"), NoiseHead(policy.config.expert_width, policy.config.action_dim)
    if mode == "joint":
        return SamplingSpec("sde", "joint", float(level or 0.5)), None
    if mode not in ("ode", "sde"):
        raise SystemExit(f"unknown sampler {name!r}: use ode, sde:<noise level>[:<mixed_steps>], joint:<noise level> "
                         "or noise")
    return SamplingSpec(mode, "mixed", float(level or 0.5), int(mixed_steps or 0)), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", required=True)
    parser.add_argument("--samplers", nargs="+", default=["ode", "sde:0.5"])
    parser.add_argument("--states", type=int, default=50, help="initial states (seeds first_seed, first_seed + 1, ...)")
    parser.add_argument("--first-seed", type=int, default=100_000, help="the RL evaluation's fixed seeds")
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--generator-seed", type=int, default=123)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env_kwargs = dict(task="lift", cameras=("agentview",), image_size=64, max_episode_steps=200, control_freq=20)
    rows = []
    with VectorEnv(args.n_envs, env_kwargs) as env:
        for path in args.policies:
            policy = load_policy(path).eval()
            for name in args.samplers:
                spec, head = sampler(policy, name)
                engine = RolloutEngine(policy, env, spec, noise_head=head)
                seeds = [args.first_seed + i for i in range(args.states)]
                out = engine.collect(seeds, 1, torch.Generator().manual_seed(args.generator_seed))
                per_state = [int(t.success) for t in sorted(out.trajectories, key=lambda t: t.seed)]
                rows.append({"policy": path, "sampler": name, "success": sum(per_state) / len(per_state),
                             "per_state": per_state})
                print(f"{path}  {name:8s}  {100 * rows[-1]['success']:.0f}% of {len(per_state)}", flush=True)
    if args.json:
        write_json(args.json, args, results=rows)


if __name__ == "__main__":
    main()

"""Where a flow policy's exploration comes from: the initial noise, or the stochastic step.

Policy gradients on a Flow-SDE chain see only the noise of its stochastic steps: the
initial noise x0 is drawn from N(0, I) whatever the weights, so it is not in the
log-prob. For each sampler this script measures, on real Lift observations, the spread
(std over samples, mean over the executed rows and action dims, in normalised action
units) of the executed action chunk

    total      - everything random (what the environment sees);
    given x0   - x0 fixed, only the stochastic steps random (what the log-prob can credit).

(given x0 / total)^2 is about the share of the action variance the policy gradient can
attribute to the policy's own noise. Rows: the ODE (x0 only), and Flow-SDE in mixed mode
with the stochastic step drawn among the first m denoising steps (m = K: any step), and in
joint mode, at several noise levels.

    python benchmarks/flow_exploration.py --policy outputs/quickstart/train/policy --json out.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402  (benchmarks/common.py)

from vla.policy.registry import load_policy  # noqa: E402
from vla.policy.observation import observations_to_batch  # noqa: E402
from vla.policy.sampling import sample_chain  # noqa: E402
from vla.sim import VectorEnv  # noqa: E402


def repeat_rows(batch: dict, n: int) -> dict:
    return {k: v.repeat_interleave(n, 0) if torch.is_tensor(v) else [x for x in v for _ in range(n)]
            for k, v in batch.items()}


def lift_observations(config, first_seed: int, states: int) -> dict:
    """The policy batch of Lift's initial observations at seeds first_seed, first_seed + 1, ..."""
    env_kwargs = dict(task="lift", cameras=tuple(config.cameras), image_size=config.image_size,
                      max_episode_steps=200)
    with VectorEnv(1, env_kwargs) as env:
        observations = [env.reset([first_seed + i])[0] for i in range(states)]
    return observations_to_batch(observations, list(config.cameras))


def spread(actions: torch.Tensor, n_states: int, n_exec: int) -> float:
    """Std over the samples of each state, averaged over states, executed rows and dims."""
    a = actions[:, :n_exec]
    return float(a.reshape(n_states, -1, *a.shape[1:]).std(1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--states", type=int, default=4, help="Lift initial states (seeds first_seed, ...)")
    parser.add_argument("--first-seed", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=64, help="samples per state")
    parser.add_argument("--noise-levels", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--mixed-steps", type=int, nargs="+", default=[1, 2, 3, 5, 0],
                        help="windows for the mixed step (0 = all denoising steps)")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = load_policy(args.policy).eval()
    c = policy.config
    batch = repeat_rows(lift_observations(c, args.first_seed, args.states), args.samples)
    n = args.states * args.samples
    g = torch.Generator().manual_seed(0)
    # One x0 per state, shared by its samples: the "given x0" spread is the stochastic steps' alone.
    x0 = torch.randn(args.states, 1, c.chunk_size, c.action_dim, generator=g)
    x0 = x0.expand(-1, args.samples, -1, -1).reshape(n, c.chunk_size, c.action_dim)

    def measure(label: str, **kw) -> dict:
        total = sample_chain(policy, batch, generator=g, **kw).actions
        fixed = sample_chain(policy, batch, generator=g, initial_noise=x0, **kw).actions
        row = {"sampler": label, "total": spread(total, args.states, c.n_action_steps),
               "given_x0": spread(fixed, args.states, c.n_action_steps)}
        row["credited_share"] = (row["given_x0"] / row["total"]) ** 2
        print(f"{label:28s} total {row['total']:.3f}  given x0 {row['given_x0']:.3f}  "
              f"share {row['credited_share']:.2f}", flush=True)
        return row

    rows = [measure("ode", mode="ode")]
    for level in args.noise_levels:
        for m in args.mixed_steps:
            window = f"first {m}" if m else f"any of {c.num_inference_steps}"
            rows.append(measure(f"sde {level} mixed, {window}", mode="sde", sde_mode="mixed", noise_level=level,
                                mixed_steps=m) | {"noise_level": level, "mixed_steps": m})
        rows.append(measure(f"sde {level} joint", mode="sde", sde_mode="joint", noise_level=level)
                    | {"noise_level": level, "mixed_steps": None})
    if args.json:
        write_json(args.json, args, rows=rows)


if __name__ == "__main__":
    main()

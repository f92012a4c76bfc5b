"""How far RL moved the deployed policy: ODE action gap to a reference (SFT) policy, same inputs.

For Lift initial states (seeds first_seed, ...) and one fixed initial noise per state, runs the
deployed ODE sampler of the reference and of each policy and reports the mean absolute gap of the
executed actions (normalised units; compare with the reference's own spread over initial noise,
printed first), and the velocity anchor (vla.rl.update.velocity_anchor: mean squared velocity gap
at random denoising steps of the reference's chains).

    python benchmarks/rl_policy_drift.py --reference SFT --policies RL1 RL2 --json out.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402  (benchmarks/common.py)
from flow_exploration import lift_observations, repeat_rows, spread  # noqa: E402

from vla.policy.registry import load_policy  # noqa: E402
from vla.policy.sampling import sample_chain  # noqa: E402
from vla.rl.update import velocity_anchor  # noqa: E402


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--policies", nargs="+", required=True)
    parser.add_argument("--states", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=100_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref = load_policy(args.reference).eval()
    c = ref.config
    batch = lift_observations(c, args.first_seed, args.states)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(args.states, c.chunk_size, c.action_dim, generator=g)
    ref_chain = sample_chain(ref, batch, "ode", initial_noise=x0)
    ref_encoded = ref.encode_observation(batch)
    n_exec = c.n_action_steps
    own = spread(sample_chain(ref, repeat_rows(batch, 32), "ode", generator=g).actions, args.states, n_exec)
    print(f"reference's own ODE action spread over initial noise: {own:.3f}")
    rows = []
    for path in args.policies:
        policy = load_policy(path).eval()
        actions = sample_chain(policy, batch, "ode", initial_noise=x0).actions
        gap = float((actions - ref_chain.actions)[:, :n_exec].abs().mean())
        anchor = sum(float(velocity_anchor(policy, ref, ref_chain.chain, policy.encode_observation(batch),
                                           ref_encoded, torch.Generator().manual_seed(i))) for i in range(8)) / 8
        rows.append({"policy": path, "ode_action_gap": gap, "velocity_anchor": anchor})
        print(f"{path}: ODE action gap {gap:.3f}, velocity anchor {anchor:.4f}", flush=True)
    if args.json:
        write_json(args.json, args, reference_spread=own, rows=rows)


if __name__ == "__main__":
    main()

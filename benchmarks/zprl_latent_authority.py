"""How much a bottleneck policy's latent moves its actions, against how much its flow noise does (issue 18).

ZPRL steers z' = z + scale * a with a in [-1, 1]^d. Whether that can fix a failure depends on how far it
moves the executed actions compared with the spread the policy already has from its own noise. On frames
of the policy's demonstrations:

    noise spread    mean over frames and action coordinates of the std of the executed chunk across
                    --noises flow-noise draws at z = mu
    latent effect   mean |chunk(z + scale * a) - chunk(mu)| with the same noise, a a random corner of
                    the box (each coordinate +-1), for each scale

    python benchmarks/zprl_latent_authority.py --policy outputs/qs_vla_vib16/policy \
        --dataset outputs/qs_vla/demos --frames 64 --scales 0.2 0.5 1.0 --name lift_vla_vib16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402  (benchmarks/common.py)

from vla.policy.flow_matching_policy import ACTION_KEY  # noqa: E402
from vla.policy.registry import load_policy  # noqa: E402


def executed(policy, context, z, noise) -> torch.Tensor:
    actions = policy.integrate(*policy.condition_from_latent(z, context), noise=noise)
    return policy.normalizer.unnormalize(ACTION_KEY, actions)[:, : policy.config.n_action_steps]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, help="a policy with a bottleneck (policy.vib_dim > 0)")
    p.add_argument("--dataset", required=True, help="its demonstrations (LeRobot format)")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--noises", type=int, default=8)
    p.add_argument("--scales", type=float, nargs="+", default=[0.2, 0.5, 1.0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--name", required=True, help="results/zprl_latent_authority_<name>.json")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    from vla.data import LeRobotDataset

    policy = load_policy(a.policy).eval()
    if getattr(policy, "vib", None) is None:
        raise SystemExit(f"{a.policy} has no bottleneck (train one with --policy.vib_dim)")
    dataset = LeRobotDataset(a.dataset)
    rng = np.random.default_rng(a.seed)
    picks = rng.choice(len(dataset), size=min(a.frames, len(dataset)), replace=False)
    g = torch.Generator().manual_seed(a.seed)
    c = policy.config
    spreads, effects = [], {s: [] for s in a.scales}
    for start in range(0, len(picks), a.batch):
        batch = default_collate([dataset[int(i)] for i in picks[start:start + a.batch]])
        with torch.no_grad():
            context, mu = policy.bottleneck_encode(batch)
            b = mu.shape[0]
            noises = [torch.randn(b, c.chunk_size, c.model_action_dim, generator=g) for _ in range(a.noises)]
            draws = torch.stack([executed(policy, context, mu, n) for n in noises])  # [noises, B, steps, A]
            spreads.append(draws.std(dim=0).mean(dim=(1, 2)))
            for scale in a.scales:
                corner = torch.randint(0, 2, mu.shape, generator=g).float() * 2 - 1
                moved = executed(policy, context, mu + scale * corner, noises[0])
                effects[scale].append((moved - draws[0]).abs().mean(dim=(1, 2)))
    spread = torch.cat(spreads)
    rows = [{"scale": s, "latent_effect": float(torch.cat(effects[s]).mean()),
             "ratio_to_noise_spread": float(torch.cat(effects[s]).mean() / spread.mean())} for s in a.scales]
    print(json.dumps({"noise_spread": float(spread.mean()), "rows": rows}, indent=1))
    print(f"\n{a.policy}: {len(picks)} demo frames, latent size {policy.vib.latent_dim}, noise spread "
          f"{float(spread.mean()):.4f} (mean std of executed actions over {a.noises} noise draws)\n")
    print("| scale | mean abs action change | / noise spread |\n|---|---|---|")
    for r in rows:
        print(f"| {r['scale']} | {r['latent_effect']:.4f} | {r['ratio_to_noise_spread']:.2f} |")
    write_json(RESULTS / f"zprl_latent_authority_{a.name}.json", a, noise_spread=float(spread.mean()), rows=rows)


if __name__ == "__main__":
    main()

"""Is one Adam step at the RL learning rate harmful by itself, whatever its gradient?

Adam's first step is lr * g / (|g| + eps), i.e. lr * sign(g): every parameter moves by the learning
rate, however small its gradient. When the policy gradient is mostly noise (BENCHMARKS.md: two GRPO
gradients from disjoint rollouts barely agree), that step is close to a random sign perturbation of
size lr on all 1.3M weights. This probe applies exactly that - p += size * sign(N(0, 1)) per
parameter, for each size given - to a trained policy, saves it, and scores it on the fixed evaluation
beside the unperturbed policy's own result (read from its evaluation folder or run here).

    python benchmarks/adam_step_probe.py --policy outputs/bench/state_sft/pick_place_can/demos5/mlp/train/policy \
        --sizes 1e-4 3e-4 --task pick_place_can --max-steps 400 --out outputs/adam_step_probe

Writes <out>/<size>/{policy,eval} and benchmarks/results/adam_step_probe_<name>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, evaluated, write_json  # noqa: E402  (benchmarks/common.py)

from vla.policy.checkpoint import save_policy  # noqa: E402
from vla.policy.registry import load_policy  # noqa: E402


def sign_perturbed(policy_dir: str, size: float, seed: int, out: Path) -> Path:
    """The policy with every trainable parameter moved by `size` in a random direction per entry."""
    policy = load_policy(policy_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad and p.is_floating_point():
                p.add_(size * torch.randn(p.shape, generator=gen).sign().to(p.dtype))
    return save_policy(policy, out)


def evaluate(policy: Path, out: Path, a) -> dict:
    info = evaluated(policy, out, a.task, a.max_steps, a.episodes, a.n_envs)
    return {"pc_success": info["aggregated"]["pc_success"], "ci95": info["aggregated"]["pc_success_ci95"],
            "success": [bool(e["success"]) for e in info["per_episode"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True)
    p.add_argument("--base-eval", help="the unperturbed policy's evaluation folder (default: evaluate it here)")
    p.add_argument("--sizes", nargs="+", type=float, default=[1e-4, 3e-4])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default="pick_place_can")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--n-envs", type=int, default=1)
    p.add_argument("--out", default="outputs/adam_step_probe")
    p.add_argument("--name", default="can5")
    a = p.parse_args()
    out = Path(a.out)
    base = evaluate(Path(a.policy), Path(a.base_eval) if a.base_eval else out / "base" / "eval", a)
    rows = [{"size": 0.0, **base}]
    for size in a.sizes:
        folder = out / f"{size:g}"
        if not (folder / "policy" / "config.json").exists():
            sign_perturbed(a.policy, size, a.seed, folder / "policy")
        row = {"size": size, **evaluate(folder / "policy", folder / "eval", a)}
        row["fixed"] = sum(s and not b for s, b in zip(row["success"], base["success"]))
        row["broke"] = sum(b and not s for s, b in zip(row["success"], base["success"]))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "success"}))
    write_json(RESULTS / f"adam_step_probe_{a.name}.json", a, rows=rows)
    print("| step size per parameter | success % (95% CI) | fixed / broke |\n|---|---|---|")
    for r in rows:
        print(f"| {r['size']:g} | {r['pc_success']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] | "
              f"{r.get('fixed', '')} / {r.get('broke', '')} |")


if __name__ == "__main__":
    main()

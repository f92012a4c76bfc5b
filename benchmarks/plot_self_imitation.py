"""Plot and tabulate self-imitation runs (benchmarks/rl_self_imitation.py --json) over seeds.

Success of each round's training rollouts (fresh states, the deployed ODE policy: an unbiased estimate
of the policy that entered the round) against cumulative env steps, one line per seed, the SFT policy's
fixed-evaluation interval as a band, and each seed's final fixed evaluation as a marker at its last step.

    python benchmarks/plot_self_imitation.py benchmarks/results/self_imitation_state_can5_seed{0,1,2}.json \
        --sft 24.0 14.3 37.4 --title "PickPlaceCan, 5-demo state policy" --out benchmarks/results/si_can5.png
    # a run continued from another's saved policy: FIRST.json+CONTINUED.json as one argument
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def load(spec: str) -> dict:
    """One run, or several joined by '+' (a run continued from the policy another one saved: its
    rounds follow on; the seed shown is the first part's)."""
    parts = []
    for path in spec.split("+"):
        run = json.loads(Path(path).read_text())
        if not run.get("rows"):
            raise SystemExit(f"{path}: no rounds recorded (is it a rl_self_imitation.py --json file?)")
        parts.append(run)
    return {**parts[0], "rows": [row for run in parts for row in run["rows"]]}


def curve(run: dict) -> tuple[list[int], list[float], list[tuple[int, float]]]:
    """Per round: the env steps that trained the policy rolled out in it (0 for the SFT policy) and its
    rollout success %; then each fixed evaluation, at the env steps that trained the evaluated policy."""
    spent = np.cumsum([0] + [r["env_steps"] for r in run["rows"]]).tolist()
    evals = [(spent[i + 1], 100 * r["eval_success"]) for i, r in enumerate(run["rows"]) if r["eval_success"] is not None]
    return spent[:-1], [100 * r["rollout_success"] for r in run["rows"]], evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--sft", nargs=3, type=float, metavar=("PCT", "LOW", "HIGH"),
                        help="the starting policy's fixed evaluation and its 95%% interval")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs = [load(p) for p in args.runs]

    print("| seed | " + " | ".join(f"round {i}" for i in range(max(len(r["rows"]) for r in runs)))
          + " | evaluations (50) | wall min |")
    print("|---" * (max(len(r["rows"]) for r in runs) + 3) + "|")
    finals = []
    for path, run in zip(args.runs, runs):
        cells = [f"{100 * r['rollout_success']:.0f}%" for r in run["rows"]]
        final = run["rows"][-1]["eval_success"]
        if final is not None:
            finals.append(100 * final)
        minutes = sum(r["round_s"] for r in run["rows"]) / 60
        evals = ", ".join(f"{100 * r['eval_success']:.0f}% after round {i}"
                          for i, r in enumerate(run["rows"]) if r["eval_success"] is not None)
        print(f"| {run['args']['seed']} | " + " | ".join(cells) + f" | {evals or '-'} | {minutes:.0f} |")
    if finals:
        print(f"final evaluation over {len(finals)} seeds: {np.mean(finals):.1f} +- {np.std(finals):.1f}% "
              f"(mean +- std), min {min(finals):.0f}%")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if args.sft:
        pct, low, high = args.sft
        ax.axhspan(low, high, color="grey", alpha=0.2, label=f"SFT policy {pct:.0f}% (95% CI)")
    for run in runs:
        steps, success, evals = curve(run)
        line, = ax.plot(steps, success, marker="o", ms=3, label=f"seed {run['args']['seed']} rollouts")
        if evals:
            ax.plot(*zip(*evals), marker="*", ms=12, color=line.get_color(), linestyle="none")
    ax.plot([], [], marker="*", ms=10, color="k", linestyle="none", label="fixed evaluation (50 states)")
    ax.set_xlabel("env steps of training rollouts behind the policy")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(args.title)
    fig.tight_layout()
    out = Path(args.out)
    tmp = out.with_name(".tmp-" + out.name)
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, out)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()

"""Two or more RL arms on the same axes: training success against env steps and against CPU-minutes (where
the results have the trainer's CPU meter) per seed, and each seed's final fixed evaluation, from the
<algo>_results.json files benchmarks/rl_lift.py writes (one arm each), the lapo_state_rl.json
benchmarks/lapo_state.py writes (one arm per algorithm in it, labelled by it), or the steering_results.json
benchmarks/rl_steering.py writes (one arm per steering space; its label, if given, is appended).

    python benchmarks/plot_rl_compare.py --results outputs/rl_can5_onpolicy/grpo_results.json \
        outputs/rl_can5_srpo/srpo_results.json --labels GRPO SRPO --start 26.0 \
        --title "PickPlaceCan 5-demo state policy" --output benchmarks/results/rl_can5_srpo_vs_grpo.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def arms(path: str, label: str | None) -> list[tuple[str, list[dict]]]:
    """[(label, runs)], each run {"env_steps": [...], "cpu_minutes": [...] or None, "success": [...] (0-1),
    "final": % or None}."""
    data = json.loads(Path(path).read_text())
    if "by_algo" in data:  # rl_steering.py: one arm per steering space
        return [(f"{algo} ({label})" if label else algo,
                 [steering_run(r) for r in data["runs"] if r["algo"] == algo]) for algo in data["by_algo"]]
    if "runs" in data:  # rl_lift.py: one algorithm
        return [(label, [{"env_steps": r["env_steps_per_iteration"], "cpu_minutes": r.get("cpu_minutes_cumulative"),
                          "success": r["success_per_iteration"], "final": r["final_eval_pc_success"]}
                         for r in data["runs"]])]
    grouped: dict[str, list[dict]] = {}  # lapo_state.py rl: rows of several algorithms
    for row in data["rows"]:
        cpu = [c[3] if len(c) > 3 else None for c in row["curve"]]  # older files have no CPU meter
        grouped.setdefault(row["algo"].upper(), []).append(
            {"env_steps": [c[0] for c in row["curve"]], "success": [c[1] for c in row["curve"]],
             "cpu_minutes": cpu if cpu and None not in cpu else None,
             "final": row["eval_pc_success"], "base": row.get("start_pc_success")})
    return list(grouped.items())


def steering_run(run: dict, block: int = 32) -> dict:
    """An off-policy run as points comparable with an on-policy iteration's: training success over
    consecutive blocks of `block` episodes, at the env steps and CPU-minutes where each block ends."""
    episodes = run["train_episodes"]
    blocks = [episodes[i:i + block] for i in range(0, len(episodes) - block + 1, block)]
    cpu = [b[-1][2] for b in blocks]
    return {"env_steps": [b[-1][0] for b in blocks], "success": [sum(e[1] for e in b) / block for b in blocks],
            "cpu_minutes": cpu if blocks and all(c is not None for c in cpu) else None,
            "final": run["eval_pc_success"], "base": run["base_pc_success"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", help="one per rl_lift.py results file (lapo_state_rl.json labels itself)")
    p.add_argument("--start", type=float, help="the starting policy's fixed-evaluation success, %%")
    p.add_argument("--title", default="")
    p.add_argument("--output", required=True)
    a = p.parse_args()
    labels = a.labels or [None] * len(a.results)
    if len(a.results) != len(labels):
        raise SystemExit("--results and --labels must have the same length")
    all_arms = [arm for path, label in zip(a.results, labels) for arm in arms(path, label)]
    metered = any(run["cpu_minutes"] for _, runs in all_arms for run in runs)
    fig, axes = plt.subplots(1, 3 if metered else 2, figsize=(16 if metered else 11, 4),
                             gridspec_kw={"width_ratios": [2, 2, 1] if metered else [2, 1]})
    curve, final, by_cpu = axes[0], axes[-1], axes[1] if metered else None
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    base_labelled = False
    for k, (label, runs) in enumerate(all_arms):
        for i, run in enumerate(runs):
            success = [100 * x for x in run["success"]]
            curve.plot(run["env_steps"], success, "o-", color=colours[k], alpha=0.7, label=label if i == 0 else None)
            if by_cpu is not None and run["cpu_minutes"]:
                by_cpu.plot(run["cpu_minutes"], success, "o-", color=colours[k], alpha=0.7,
                            label=label if i == 0 else None)
        finals = [run["final"] for run in runs if run["final"] is not None]
        final.scatter([k] * len(finals), finals, color=colours[k], zorder=3)
        bases = sorted({run["base"] for run in runs if run.get("base") is not None})  # each run's starting policy
        if bases:
            final.scatter([k + 0.15] * len(bases), bases, facecolors="none", edgecolors=colours[k], zorder=3,
                          label=None if base_labelled else "start (steering: the frozen base)")
            base_labelled = True
        if finals:
            final.hlines(sum(finals) / len(finals), k - 0.25, k + 0.25, color=colours[k])
    if a.start is not None:
        final.axhline(a.start, color="grey", linestyle="--", label="start")
    if final.get_legend_handles_labels()[0]:
        final.margins(y=0.3)  # room above the points, so the legend covers none
        final.legend(loc="upper center", fontsize="small")
    curve.set_xlabel("env steps")
    curve.set_ylabel("training success, %")
    curve.legend()
    if by_cpu is not None:
        by_cpu.set_xlabel("CPU-minutes (trainer and env workers)")
        by_cpu.set_ylabel("training success, %")
        by_cpu.legend()
    final.set_xticks(range(len(all_arms)), [label for label, _ in all_arms],
                     rotation=30 if len(all_arms) > 2 else 0, ha="right" if len(all_arms) > 2 else "center")
    final.set_ylabel("final fixed evaluation, % (50 states)")
    fig.suptitle(a.title)
    fig.tight_layout()
    out = Path(a.output)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Off-policy steering benchmark: `vla rl --algo noise|residual|zprl` over seeds, on one env-step budget.

Each (algo, seed) is one `vla rl` process (so its own outputs, TensorBoard and evaluation), run
`--jobs` at a time; a finished run (rl_summary.json present) is reused, not re-run. Writes

    <output>/<algo>/seed<k>/...                 each run's outputs (history.json, policy/, eval/)
    <output>/steering_results.json              per run: base and steered success on the fixed
                                                evaluation (same states and flow noise), states fixed
                                                and broken, eval success over env steps, train time,
                                                smoothness; per algo: mean and spread over seeds
    <output>/steering_success.png               periodic eval success against env steps, per algo,
                                                mean and min-max over seeds, with the base level

benchmarks/plot_rl_compare.py puts steering_results.json beside on-policy arms (training success in
blocks of 32 episodes, against env steps and CPU-minutes).

    python benchmarks/rl_steering.py --policy P --task lift --algos noise residual --seeds 0 1 2 \
        --env-steps 40000 --jobs 2 --output outputs/bench/steering/lift -- --reward=time

`--extend-from` continues earlier runs to a larger `--env-steps` (same other flags): each resumes exactly
from its last checkpoint, copied into the new `--output`.

Arguments after `--` go to every `vla rl` call (a zprl run needs a policy with a bottleneck:
`--zprl-policy`). A pixel VLA needs its cameras and config:

    python benchmarks/rl_steering.py --policy P --config configs/rl/lift_vla_zprl.yaml --cameras agentview \
        --algos noise residual --seeds 1 2 --env-steps 20000 --eval-every 0 --jobs 1 --output outputs/bench/steering/lift_vla
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402  (benchmarks/common.py)


def run(args, algo: str, seed: int) -> dict:
    out = Path(args.output) / algo / f"seed{seed}"
    summary, recorded = out / "rl_summary.json", out / "command.json"
    policy = args.zprl_policy if algo == "zprl" and args.zprl_policy else args.policy
    config = [f"--config={args.config}"] if args.config else []
    cmd = [sys.executable, "-m", "vla.cli", "rl", *config, f"--algo={algo}", f"--policy={policy}", f"--output_dir={out}",
           "--overwrite=true", f"--task={args.task}", f"--env.cameras=[{args.cameras}]", f"--seed={seed}", "--n_envs=1",
           f"--offpolicy.env_steps={args.env_steps}", f"--offpolicy.eval_every={args.eval_every}",
           f"--eval.n_episodes={args.eval_episodes}", f"--eval.n_episodes_periodic={args.periodic_episodes}",
           *args.overrides]
    if args.extend_from:  # go on from an earlier run's last checkpoint: an exact resume with a larger budget
        cmd[cmd.index("--overwrite=true")] = "--resume=true"
    # a finished run is reused only if it ran this very command
    if not (summary.is_file() and recorded.is_file() and json.loads(recorded.read_text()) == cmd[1:]):
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.extend_from:
            source = Path(args.extend_from) / algo / f"seed{seed}"
            if not (source / "checkpoints" / "last").is_dir():
                raise SystemExit(f"--extend-from: {source}/checkpoints/last does not exist")
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(source / "checkpoints" / "last", out / "checkpoints" / "last")
            shutil.copy2(source / "config.yaml", out / "config.yaml")
        start = time.time()
        with open(out.parent / f"seed{seed}.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
        recorded.write_text(json.dumps(cmd[1:]))
        print(f"{algo} seed {seed}: {time.time() - start:.0f} s", flush=True)
    result = json.loads(summary.read_text())
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
    episodes = json.loads((out / "episodes.json").read_text())
    return {"algo": algo, "seed": seed, "base_policy": policy, **result,
            "curve": [(h["env_steps"], h["eval_success_rate"]) for h in history],
            # every training episode (stochastic steering): env steps and training CPU-minutes at its end
            "train_episodes": [(e["env_steps"], e["success"], e.get("train_cpu_minutes")) for e in episodes]}


def aggregate(runs: list[dict]) -> dict:
    by_algo: dict[str, dict] = {}
    for algo in sorted({r["algo"] for r in runs}):
        rs = [r for r in runs if r["algo"] == algo]
        gains = [r["eval_pc_success"] - r["base_pc_success"] for r in rs]
        by_algo[algo] = {
            "seeds": [r["seed"] for r in rs],
            "base_pc_success": [r["base_pc_success"] for r in rs],
            "steered_pc_success": [r["eval_pc_success"] for r in rs],
            "steered_mean": statistics.mean(r["eval_pc_success"] for r in rs),
            "steered_std": statistics.pstdev(r["eval_pc_success"] for r in rs),
            "gain_mean": statistics.mean(gains),
            "every_seed_above_base_upper_ci": all(r["eval_pc_success"] > r["base_pc_success_ci95"][1] for r in rs),
            "train_minutes_mean": statistics.mean(r["train_s"] - r.get("eval_s", 0.0) for r in rs) / 60,
            "action_smoothness_last100_mean": statistics.mean(r["action_smoothness_last100"] for r in rs),
        }
    return by_algo


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    for algo in sorted({r["algo"] for r in runs}):
        curves = [r["curve"] for r in runs if r["algo"] == algo and r["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [c[0] for c in curves[0][:n]]
        values = 100 * np.array([[v for _, v in c[:n]] for c in curves])
        ax.plot(steps, values.mean(0), marker="o", label=f"{algo} ({len(curves)} seeds)")
        ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
    for policy in sorted({r["base_policy"] for r in runs}):  # zprl's base (with a bottleneck) differs
        base = [r["base_pc_success"] for r in runs if r["base_policy"] == policy and "base_pc_success" in r]
        if base:
            n = runs[0]["args_eval_episodes"]
            ax.axhline(statistics.mean(base), ls="--", label=f"base {Path(policy).parent.name} ({n}-state final eval)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval success (%): curves on the periodic states")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True)
    p.add_argument("--zprl-policy", default="", help="the policy with a bottleneck, for --algos zprl")
    p.add_argument("--task", default="lift")
    p.add_argument("--config", default="", help="a `vla rl` config the runs start from (e.g. configs/rl/lift_vla_zprl.yaml)")
    p.add_argument("--cameras", default="", help="comma-separated cameras for a pixel policy (default none: a state policy)")
    p.add_argument("--algos", nargs="+", default=["noise", "residual"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--env-steps", type=int, default=40_000)
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=50, help="final fixed evaluation, base and steered")
    p.add_argument("--periodic-episodes", type=int, default=20)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--output", default="outputs/bench/steering")
    p.add_argument("--extend-from", default="", help="an earlier --output: each run resumes from its last checkpoint "
                   "there (copied, the earlier run is left as it was) and trains on to --env-steps")
    p.add_argument("overrides", nargs="*", help="after --: passed to every `vla rl`")
    args = p.parse_args()
    if args.extend_from and Path(args.extend_from).resolve() == Path(args.output).resolve():
        p.error("--extend-from and --output must differ: the earlier runs are copied, never overwritten")
    jobs = [(algo, seed) for algo in args.algos for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: run(args, *job), jobs))
    for r in runs:
        r["args_eval_episodes"] = args.eval_episodes
    out = Path(args.output)
    results = {"machine": machine(), "args": vars(args), "by_algo": aggregate(runs), "runs": runs}
    (out / "steering_results.json").write_text(json.dumps(results, indent=1))
    plot(runs, out / "steering_success.png", f"steering a frozen {args.task} policy")
    print(json.dumps(results["by_algo"], indent=1))


if __name__ == "__main__":
    main()

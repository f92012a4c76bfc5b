"""RL post-training benchmark: success over iterations and time per iteration (Lift by default, any
task through --config).

Runs GRPO or PPO (configs/rl/lift_<algo>.yaml) from a supervised checkpoint for
N iterations, once per seed, and writes

    <output>/<algo>/seed<k>/...            each run's own outputs (history.json, success.png, tb, eval)
    <output>/<algo>_results.json           per seed: success per iteration (training rollouts and periodic
                                           deterministic evaluations), env steps, final evaluation, env steps
                                           to reach 90 %, timings per iteration (rollout / log-prob recompute /
                                           update); mean and spread over seeds; the SFT policy's level
    <output>/<algo>_success.png            success over iterations, mean +- std over seeds, SFT level

    python benchmarks/rl_lift.py --algo grpo --policy outputs/quickstart/train/policy --iterations 30 --seeds 0 1 2
    python benchmarks/rl_lift.py --algo ppo --policy P --iterations 1 --seeds 0 --eval-episodes 0   # smoke run
    python benchmarks/rl_lift.py --algo filtered_bc --config configs/rl/lift_state_filtered_bc.yaml --policy P \
        --iterations 15 --seeds 0 1 2 -- --demos=<its SFT demos>

Extra arguments after `--` are passed to the RL config (`-- --lr=2e-5 --n_groups=8`). A killed
benchmark resumes each seed from its last checkpoint when run again with the same arguments, and
a finished seed is reused, not re-run: seeds can run as parallel processes (`--seeds 1
--no-sft-eval`), then one call with all seeds aggregates them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402  (benchmarks/common.py)

from vla.config import RLConfig, parse_config  # noqa: E402
from vla.rl.trainer import train_rl  # noqa: E402

PHASES = ("rollout_s", "logprob_s", "update_s")
# what the reward and the filter did each iteration (SRPO's progress statistics where present)
REWARD_STATS = ("kept_group_fraction", "optimizer_steps", "success_clusters", "graded_failures", "progress_fallback",
                "no_success_tasks", "failure_reward_mean", "failure_reward_std", "progress_spearman",
                "progress_spearman_all", "reward_s")


def make_config(args, seed: int, out: Path) -> RLConfig:
    config = args.config or str(ROOT / "configs" / "rl" / f"lift_{args.algo}.yaml")
    argv = ["--config", config, f"--algo={args.algo}",
            f"--policy={args.policy}", f"--output_dir={out}", f"--iterations={args.iterations}", f"--seed={seed}",
            # Different seeds also see different training initial states; evaluation states stay fixed.
            f"--train_seed={1_000_000 + 10_000 * seed}", f"--eval.n_episodes={args.final_eval_episodes}",
            f"--eval.every={args.eval_every}", f"--eval.n_episodes_periodic={args.eval_episodes}"]
    if (out / "checkpoints" / "last").is_dir():
        argv.append("--resume=true")
    return parse_config(RLConfig, argv + args.overrides)


def run_seed(args, seed: int, out: Path) -> dict:
    done = out / "rl_summary.json"
    if done.is_file() and json.loads(done.read_text()).get("iterations") == args.iterations:
        # Finished earlier (e.g. seeds run as separate processes): reuse, do not train or evaluate again.
        summary = json.loads(done.read_text())
        history = json.loads((out / "history.json").read_text())["history"]
        wall_s = sum(h["iteration_s"] for h in history)
    else:
        cfg = make_config(args, seed, out)
        start = time.time()
        summary = train_rl(cfg, progress=not args.quiet)
        history = json.loads((out / "history.json").read_text())["history"]
        wall_s = time.time() - start
    # the trainer's meter: its own process and every env worker below it, per iteration (runs from before
    # the meter existed have none)
    cpu_minutes = cpu_minutes_cumulative(history)
    cpu_s = 60 * cpu_minutes[-1] if cpu_minutes else None
    evals = [(h["iteration"], h["env_steps"], h["eval_success_rate"]) for h in history if "eval_success_rate" in h]
    if "eval_pc_success" in summary:
        evals.append((history[-1]["iteration"], history[-1]["env_steps"], summary["eval_pc_success"] / 100))

    def steps_to(threshold: float, curve) -> int | None:
        return next((steps for _, steps, s in curve if s >= threshold), None)

    train_curve = [(h["iteration"], h["env_steps"], h["success_rate"]) for h in history]
    return {
        "seed": seed, "wall_s": wall_s, "cpu_s": cpu_s, "output_dir": str(out),
        "success_per_iteration": [h["success_rate"] for h in history],
        "env_steps_per_iteration": [h["env_steps"] for h in history],
        "eval": [{"iteration": i, "env_steps": s, "success_rate": r} for i, s, r in evals],
        "final_eval_pc_success": summary.get("eval_pc_success"),
        "env_steps_to_90_eval": steps_to(0.9, evals),
        "env_steps_to_90_train": steps_to(0.9, train_curve),
        "timings": {k: [h[k] for h in history] for k in (*PHASES, "iteration_s")},
        "cpu_minutes_cumulative": cpu_minutes,
        "reward_stats": {k: [h.get(k) for h in history] for k in REWARD_STATS if any(k in h for h in history)},
    }


def cpu_minutes_cumulative(history: list[dict]) -> list[float] | None:
    """CPU-minutes behind the policy after each iteration (the trainer's per-iteration meter), or None."""
    if not history or not all("cpu_s" in h for h in history):
        return None
    return [float(v) / 60 for v in np.cumsum([h["cpu_s"] for h in history])]


def sft_level(cfg: RLConfig) -> float | None:
    """Deterministic success of the starting policy with the RL runs' final evaluation protocol."""
    if cfg.eval.n_episodes <= 0:
        return None
    from vla.config import resolve_threads
    from vla.eval.evaluate import env_kwargs_for
    from vla.eval.runner import evaluate_policy
    from vla.policy.registry import load_policy

    resolve_threads(cfg.num_threads)
    policy = load_policy(cfg.policy)
    episodes, _ = evaluate_policy(policy, env_kwargs_for(policy, cfg.env), cfg.eval.n_episodes, cfg.n_envs,
                                  seed=cfg.eval.seed, progress=False, fixed_init_states="/" in cfg.env.task)
    return float(np.mean([e.success for e in episodes]))


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)} if values else {"mean": None, "std": None, "n": 0}


def aggregate(runs: list[dict]) -> dict:
    n_it = min(len(r["success_per_iteration"]) for r in runs)
    per_it = [[r["success_per_iteration"][i] for r in runs] for i in range(n_it)]
    finals = [r["final_eval_pc_success"] for r in runs if r["final_eval_pc_success"] is not None]
    return {
        "success_per_iteration": [mean_std(v) for v in per_it],
        "final_eval_pc_success": mean_std(finals),
        "timings_per_iteration_s": {k: mean_std([t for r in runs for t in r["timings"][k]])
                                    for k in (*PHASES, "iteration_s")},
        "env_steps_to_90_eval": [r["env_steps_to_90_eval"] for r in runs],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((ax1, ax_steps), (ax_cpu, ax2)) = plt.subplots(2, 2, figsize=(12, 9))
    agg = results["aggregate"]["success_per_iteration"]
    its = np.arange(1, len(agg) + 1)
    mean = np.array([100 * a["mean"] for a in agg])
    std = np.array([100 * a["std"] for a in agg])
    ax1.plot(its, mean, label=f"training rollouts, mean of {len(results['runs'])} seeds")
    ax1.fill_between(its, mean - std, mean + std, alpha=0.25)
    for r in results["runs"]:
        if r["eval"]:
            ax1.plot([e["iteration"] + 1 for e in r["eval"]], [100 * e["success_rate"] for e in r["eval"]],
                     "s--", ms=4, alpha=0.7, label=f"evaluation, seed {r['seed']}")
    if results["sft_success"] is not None:
        ax1.axhline(100 * results["sft_success"], color="k", ls=":", label="SFT policy (evaluation)")
    ax1.set(xlabel="RL iteration", ylabel="success rate (%)", ylim=(-2, 102),
            title=f"{results['algo'].upper()} on {results.get('task', 'lift')}")
    ax1.legend(fontsize=8, loc="lower right")
    ax1.grid(alpha=0.3)
    for ax, key, label in ((ax_steps, "env_steps_per_iteration", "env steps (cumulative)"),
                           (ax_cpu, "cpu_minutes_cumulative", "CPU-minutes (trainer + env workers)")):
        for i, r in enumerate(results["runs"]):
            xs = r.get(key)
            if not xs:  # e.g. a run from before the CPU meter
                continue
            ax.plot(xs, [100 * v for v in r["success_per_iteration"]], alpha=0.8, color=f"C{i}",
                    label=f"training rollouts, seed {r['seed']}")
            if r["final_eval_pc_success"] is not None:
                ax.plot([xs[-1]], [r["final_eval_pc_success"]], "*", ms=12, color=f"C{i}")
        if results["sft_success"] is not None:
            ax.axhline(100 * results["sft_success"], color="k", ls=":")
        ax.set(xlabel=label, ylabel="success rate (%)", ylim=(-2, 102), title="per seed; stars: final evaluation")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    t = results["aggregate"]["timings_per_iteration_s"]
    names = ["rollout", "log-prob recompute", "update"]
    vals = [t[k]["mean"] for k in PHASES]
    ax2.bar(names, vals, yerr=[t[k]["std"] for k in PHASES], capsize=5, color=["tab:blue", "tab:orange", "tab:green"])
    ax2.set(ylabel="seconds per iteration (mean +- std)", title="time per iteration")
    fig.tight_layout()
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", choices=["grpo", "ppo", "filtered_bc", "srpo"], required=True)
    parser.add_argument("--policy", required=True, help="supervised policy checkpoint directory")
    parser.add_argument("--config", help="RL config file (default: configs/rl/lift_<algo>.yaml)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "rl_lift"))
    parser.add_argument("--eval-every", type=int, default=5, help="deterministic evaluation every k iterations (0: off)")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes per periodic evaluation")
    parser.add_argument("--final-eval-episodes", type=int, default=50, help="episodes of the final and the SFT evaluation")
    parser.add_argument("--no-sft-eval", dest="sft_eval", action="store_false",
                        help="skip the SFT policy's evaluation (when seeds run as separate processes, the "
                             "final aggregating call evaluates it once)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.overrides = overrides
    if not Path(args.policy).is_dir():
        parser.error(f"--policy {args.policy} is not a directory (train one with `vla quickstart`)")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    sft = sft_level(make_config(args, args.seeds[0], out / "sft_eval")) if args.sft_eval else None
    runs = [run_seed(args, seed, out / args.algo / f"seed{seed}") for seed in args.seeds]
    task = make_config(args, args.seeds[0], out / args.algo / f"seed{args.seeds[0]}").env.task
    results = {"algo": args.algo, "task": task, "policy": args.policy, "iterations": args.iterations, "seeds": args.seeds,
               "machine": machine(), "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d"), "sft_success": sft, "runs": runs, "aggregate": aggregate(runs)}
    path = out / f"{args.algo}_results.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)
    plot(results, out / f"{args.algo}_success.png")
    agg = results["aggregate"]
    t = agg["timings_per_iteration_s"]
    print(f"{args.algo.upper()} on {task}, {len(runs)} seed(s), {args.iterations} iterations: SFT "
          f"{'n/a' if sft is None else f'{100 * sft:.0f}%'} -> final evaluation "
          f"{agg['final_eval_pc_success']['mean']} +- {agg['final_eval_pc_success']['std']} %")
    print("seconds per iteration: " + ", ".join(f"{k} {t[k]['mean']:.1f} +- {t[k]['std']:.1f}"
                                                 for k in (*PHASES, "iteration_s")))
    print(f"results: {path}, plot: {out / f'{args.algo}_success.png'}")


if __name__ == "__main__":
    main()

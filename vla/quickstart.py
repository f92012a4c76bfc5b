"""`vla quickstart`: demos -> LeRobot dataset -> supervised flow matching -> evaluation report
-> (optionally) a short RL phase, evaluated with the same protocol.

All outputs go under `output_dir` (the sub-commands' own output paths are
derived from it, so one flag moves the whole run).
"""

from __future__ import annotations

import time
from pathlib import Path

from vla.atomic_io import write_json_atomic
from vla.config import QuickstartConfig, write_resolved_config
from vla.run_dir import claim_output_dir


def run_quickstart(cfg: QuickstartConfig, progress: bool = True) -> dict:
    from vla.collect import collect
    from vla.eval.evaluate import run_eval
    from vla.train.sft import train

    out = claim_output_dir(cfg.output_dir, cfg.overwrite)
    cfg.collect.output_dir = str(out / "demos")
    cfg.collect.overwrite = True
    cfg.train.dataset = cfg.collect.output_dir
    cfg.train.output_dir = str(out / "train")
    cfg.eval.policy = str(out / "train" / "policy")
    cfg.eval.output_dir = str(out / "eval")
    cfg.eval.env = cfg.collect.env
    cfg.rl.policy = cfg.eval.policy
    cfg.rl.output_dir = str(out / "rl")
    cfg.rl.env = cfg.collect.env
    if cfg.rl.algo == "filtered_bc" and not cfg.rl.demos:
        cfg.rl.demos = cfg.collect.output_dir  # its own demos stay in every update
    cfg.rl.eval.n_episodes, cfg.rl.eval.seed = cfg.eval.n_episodes, cfg.eval.seed  # same protocol as SFT eval
    write_resolved_config(cfg, out)
    stages = 4 if cfg.rl.iterations > 0 else 3
    timings = {}
    start = time.time()
    print(f"[1/{stages}] collecting {cfg.collect.num_episodes} scripted demonstrations on {cfg.collect.env.task}")
    collect(cfg.collect, progress)
    timings["collect_s"] = time.time() - start
    kind = "state_flow" if cfg.train.policy.type == "state_flow" else cfg.train.policy.preset
    print(f"[2/{stages}] training a {kind} flow-matching policy for {cfg.train.steps} steps")
    t = time.time()
    train(cfg.train, progress)
    timings["train_s"] = time.time() - t
    print(f"[3/{stages}] evaluating on {cfg.eval.n_episodes} episodes")
    t = time.time()
    info = run_eval(cfg.eval, progress)
    timings["eval_s"] = time.time() - t
    summary = {"pc_success": info["aggregated"]["pc_success"], "pc_success_ci95": info["aggregated"]["pc_success_ci95"],
               "n_episodes": info["aggregated"]["n_episodes"]}
    if cfg.rl.iterations > 0:
        from vla.rl.trainer import train_rl

        print(f"[4/{stages}] RL post-training ({cfg.rl.algo}, {cfg.rl.iterations} iterations), then the same evaluation")
        t = time.time()
        rl = train_rl(cfg.rl, progress)
        timings["rl_s"] = time.time() - t
        summary.update(rl_pc_success=rl.get("eval_pc_success"), rl_pc_success_ci95=rl.get("eval_pc_success_ci95"))
        print(f"success before RL {summary['pc_success']:.1f}% -> after RL {summary['rl_pc_success']:.1f}% "
              f"({summary['n_episodes']} episodes each, same initial states)")
    timings["total_s"] = time.time() - start
    summary.update(timings)
    write_json_atomic(out / "quickstart_summary.json", summary)
    print(f"quickstart finished in {timings['total_s'] / 60:.1f} min ("
          + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items() if k != "total_s") + ")")
    print(f"report: {out / 'eval' / 'eval_report.png'}, videos: {out / 'eval' / 'videos'}, "
          f"TensorBoard: tensorboard --logdir {out}")
    return summary

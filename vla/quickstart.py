"""`vla quickstart`: demos -> LeRobot dataset -> supervised flow matching -> evaluation report.

All outputs go under `output_dir` (the sub-commands' own output paths are
derived from it, so one flag moves the whole run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from vla.config import QuickstartConfig, write_resolved_config


def run_quickstart(cfg: QuickstartConfig, progress: bool = True) -> dict:
    from vla.collect import collect
    from vla.eval.evaluate import run_eval
    from vla.train.sft import train

    out = Path(cfg.output_dir)
    cfg.collect.output_dir = str(out / "demos")
    cfg.collect.overwrite = True
    cfg.train.dataset = cfg.collect.output_dir
    cfg.train.output_dir = str(out / "train")
    cfg.eval.policy = str(out / "train" / "policy")
    cfg.eval.output_dir = str(out / "eval")
    cfg.eval.env = cfg.collect.env
    write_resolved_config(cfg, out)
    timings = {}
    start = time.time()
    print(f"[1/3] collecting {cfg.collect.num_episodes} scripted demonstrations on {cfg.collect.env.task}")
    collect(cfg.collect, progress)
    timings["collect_s"] = time.time() - start
    print(f"[2/3] training a {cfg.train.policy.preset} flow-matching policy for {cfg.train.steps} steps")
    t = time.time()
    train(cfg.train, progress)
    timings["train_s"] = time.time() - t
    print(f"[3/3] evaluating on {cfg.eval.n_episodes} episodes")
    t = time.time()
    info = run_eval(cfg.eval, progress)
    timings["eval_s"] = time.time() - t
    timings["total_s"] = time.time() - start
    summary = {"pc_success": info["aggregated"]["pc_success"], "pc_success_ci95": info["aggregated"]["pc_success_ci95"],
               "n_episodes": info["aggregated"]["n_episodes"], **timings}
    (out / "quickstart_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"quickstart finished in {timings['total_s'] / 60:.1f} min "
          f"(collect {timings['collect_s']:.0f} s, train {timings['train_s']:.0f} s, eval {timings['eval_s']:.0f} s)")
    print(f"report: {out / 'eval' / 'eval_report.png'}, videos: {out / 'eval' / 'videos'}, "
          f"TensorBoard: tensorboard --logdir {out}")
    return summary

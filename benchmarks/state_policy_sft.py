"""Supervised state policies from few scripted demos: success on the fixed 50-episode evaluation.

For each task and demo count: collect the demos once (no cameras: robot + object state), train a
state_flow policy per backbone, evaluate it on seeds 100000..100049 with Wilson intervals. The
point is to find starting policies for RL whose success sits between 20% and 60%.

    python benchmarks/state_policy_sft.py --tasks pick_place_can nut_assembly_square --demos 5 10 \
        --backbones mlp unet --steps 3000 --out outputs/bench/state_sft

A LIBERO task ("libero_object/0") gets its suite's step limit; its demos start from LIBERO's own placement
sampler and the evaluation from the suite's 50 fixed initial states (state i for episode i).

Writes <out>/<task>/demos<N>/{demos,<backbone>/train,<backbone>/eval} and benchmarks/results/
state_policy_sft.json (or --json). Runs that exist already are reused, so the script can be
re-run to add rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, evaluated, run_vla as run, write_json  # noqa: E402  (benchmarks/common.py)


# Episode step limits: long enough for the scripted expert's slowest demos (robomimic uses 400-500).
STEP_LIMITS = {"lift": 200, "pick_place_can": 400, "nut_assembly_square": 400, "stack": 300}


def step_limit(task: str) -> int:
    if "/" in task:  # a LIBERO task: its suite's own limit (the evaluation protocol's)
        from vla.sim import get_libero_task

        return get_libero_task(task).max_episode_steps
    return STEP_LIMITS.get(task, 300)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["pick_place_can", "nut_assembly_square"])
    p.add_argument("--demos", nargs="+", type=int, default=[5, 10])
    p.add_argument("--backbones", nargs="+", default=["mlp"])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--n-envs", type=int, default=2)
    p.add_argument("--out", default="outputs/bench/state_sft")
    p.add_argument("--json", default=str(RESULTS / "state_policy_sft.json"))
    a = p.parse_args()
    rows = []
    for task in a.tasks:
        limit = str(step_limit(task))
        for n in a.demos:
            root = Path(a.out) / task / f"demos{n}"
            if not (root / "demos" / "meta" / "info.json").exists():
                run(["collect", f"--output_dir={root / 'demos'}", f"--env.task={task}", "--env.cameras=[]",
                     f"--num_episodes={n}", f"--env.max_episode_steps={limit}", "--overwrite=true"])
            for backbone in a.backbones:
                train, evaluation = root / backbone / "train", root / backbone / "eval"
                start = time.time()
                if not (train / "policy" / "config.json").exists():
                    run(["train", f"--dataset={root / 'demos'}", f"--output_dir={train}", "--policy.type=state_flow",
                         f"--policy.backbone={backbone}", f"--steps={a.steps}", f"--batch_size={a.batch_size}",
                         f"--ema_decay={a.ema_decay}", "--overwrite=true"])
                train_s = time.time() - start
                info = evaluated(train / "policy", evaluation, task, int(limit), a.eval_episodes, a.n_envs,
                                 n_videos=2)["aggregated"]
                row = {"task": task, "demos": n, "backbone": backbone, "pc_success": info["pc_success"],
                       "ci95": info["pc_success_ci95"], "episodes": info["n_episodes"], "train_s": round(train_s, 1),
                       "policy": str(train / "policy")}
                rows.append(row)
                print(json.dumps(row))
    write_json(a.json, a, rows=rows)
    print("| task | demos | backbone | success % (95% CI) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['demos']} | {r['backbone']} | {r['pc_success']:.1f} "
              f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] |")


if __name__ == "__main__":
    main()

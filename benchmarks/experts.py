"""Scripted-expert success rate per task, with a 95% Wilson interval.

robosuite tasks: seeds start at 100 (the experts were tuned by hand on seeds
0-9, so the measured seeds are ones they never saw). LIBERO tasks: the suite's
own fixed initial states 0..N-1 after LIBERO's 10 settling steps, under the
suite's protocol step limit (the LIBERO expert was tuned on states 0-2 of a
few tasks). Physics only (no rendering).

    python benchmarks/experts.py                          # every expert, writes benchmarks/results/experts.md
    python benchmarks/experts.py --seeds 3 --init-states 2   # smoke run
    python benchmarks/experts.py --tasks door --suites       # one robosuite task, no LIBERO
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result  # noqa: E402

from vla.eval.stats import wilson_interval  # noqa: E402
from vla.sim import EXPERTS, make_env, make_expert  # noqa: E402
from vla.sim.experts import LIBERO_EXPERT_SUITES  # noqa: E402

FIRST_SEED = 100


def run_expert(task: str, episodes: range, noise_std: float, max_steps: int | None = None) -> dict:
    """Success count, episode lengths of the successes, and wall time for ``task``'s expert.

    robosuite tasks: episode i starts from seed i; LIBERO tasks ("<suite>/<index>"): from the
    suite's initial state i, under the suite's step limit unless ``max_steps`` says otherwise.
    """
    libero = "/" in task
    kwargs = {"cameras": ("agentview",), "image_size": 16}
    if max_steps is not None:
        kwargs["max_episode_steps"] = max_steps
    env = make_env(task=task, **kwargs)
    expert = make_expert(task, noise_std=noise_std, seed=0)
    successes, lengths, failed = 0, [], []
    start = time.perf_counter()
    try:
        for i in episodes:
            if libero:
                env.reset(options={"init_state_index": i})
            else:
                env.reset(seed=i)
            expert.reset()
            for step in range(1, env.max_episode_steps + 1):
                _, terminated, truncated, info = env.step_physics(expert.act(env.privileged_state()))
                if terminated or truncated:
                    break
            if info["is_success"]:
                successes += 1
                lengths.append(step)
            else:
                failed.append(f"{i} ({expert.phase.value})")
        instruction = env.instruction
    finally:
        env.close()
    return {"successes": successes, "lengths": lengths, "failed": failed, "seconds": time.perf_counter() - start,
            "instruction": instruction}


def _row(name: str, noise: float, n: int, r: dict, extra: str = "") -> str:
    k = r["successes"]
    lo, hi = wilson_interval(k, n)
    steps = f"{sum(r['lengths']) / k:.0f}, {max(r['lengths'])}" if k else "-"
    return (f"| {name} |{extra} {noise} | {k}/{n} | {100 * k / n:.0f}% | [{100 * lo:.0f}%, {100 * hi:.0f}%] | {steps} "
            f"| {', '.join(r['failed']) or '-'} | {r['seconds']:.1f} |")


def _header() -> str:
    # As common.header, without asking git for the commit (the lead records it when committing).
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    return (f"## Scripted-expert success\n\nMachine: {machine()}. Date: {datetime.date.today().isoformat()}. "
            f"Command: `{cmd}`\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="episodes per robosuite task")
    parser.add_argument("--max-steps", type=int, default=200, help="robosuite episode step limit (RobosuiteEnv default)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1], help="robosuite expert action noise stds")
    parser.add_argument("--tasks", nargs="*", default=sorted(EXPERTS), help="robosuite tasks")
    parser.add_argument("--suites", nargs="*", default=sorted(LIBERO_EXPERT_SUITES), help="LIBERO suites")
    parser.add_argument("--task-ids", type=int, nargs="*", default=None, help="LIBERO task indices (default: all)")
    parser.add_argument("--init-states", type=int, default=10, help="LIBERO episodes per task (initial states 0..N-1)")
    parser.add_argument("--libero-noise", type=float, nargs="+", default=[0.0], help="LIBERO expert action noise stds")
    parser.add_argument("--output", default="experts.md", help="file name under benchmarks/results")
    args = parser.parse_args()
    seeds = range(FIRST_SEED, FIRST_SEED + args.seeds)

    lines = [_header()]
    if args.tasks:
        lines += [
            "### robosuite",
            f"Seeds {seeds.start}-{seeds.stop - 1}, step limit {args.max_steps}, physics only, Panda OSC_POSE at "
            "20 Hz. Noise: Gaussian std added to the arm actions (not the gripper), as `vla collect` does with "
            "`expert_noise` for diverse demos.\n",
            "| task | noise std | success | rate | 95% CI | steps to success (mean, max) "
            "| failed seeds (phase at the end) | wall s |",
            "|---|---:|---:|---:|---|---|---|---:|",
        ]
        for task in args.tasks:
            for noise in args.noise:
                lines.append(_row(task, noise, len(seeds), run_expert(task, seeds, noise, args.max_steps)))
                print(lines[-1], flush=True)
    if args.suites:
        from vla.sim import SUITE_MAX_STEPS, list_libero_tasks

        states = range(args.init_states)
        lines += [
            "\n### LIBERO",
            f"Initial states 0-{states.stop - 1} of each task (the suite's own, after 10 settling steps), the "
            f"suite's step limit ({', '.join(f'{s} {SUITE_MAX_STEPS[s]}' for s in args.suites)}), physics only.\n",
            "| task | instruction | noise std | success | rate | 95% CI | steps to success (mean, max) "
            "| failed states (phase at the end) | wall s |",
            "|---|---|---:|---:|---:|---|---|---|---:|",
        ]
        for suite in args.suites:
            ids = args.task_ids if args.task_ids is not None else range(len(list_libero_tasks(suite)))
            total = {noise: [0, 0] for noise in args.libero_noise}
            for i in ids:
                for noise in args.libero_noise:
                    r = run_expert(f"{suite}/{i}", states, noise)
                    total[noise][0] += r["successes"]
                    total[noise][1] += len(states)
                    lines.append(_row(f"{suite}/{i}", noise, len(states), r, extra=f" {r['instruction']} |"))
                    print(lines[-1], flush=True)
            for noise, (k, n) in total.items():
                lines.append(f"| **{suite} (all)** | | {noise} | {k}/{n} | {100 * k / n:.0f}% | | | | |")
    write_result(args.output, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

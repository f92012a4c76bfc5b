"""Simulation throughput for robosuite Lift and LIBERO-spatial, in one run:

- env steps/s per mode (physics only, rendering every step, rendering at chunk
  boundaries with chunk 8) in 1 and N concurrent worker processes, beside the raw
  MuJoCo physics step of the same scene (the physical limit);
- framework overhead: VectorEnv rollouts with a trivial policy as a fraction of
  the raw env rate with as many workers;
- per-frame cost of each cheap-render setting of sim/render.py, per scene;
- the Lift scripted expert's success rate with a 95% Wilson interval.

    python benchmarks/env_steps.py                    # writes benchmarks/results/env_steps.md
    python benchmarks/env_steps.py --workers 1,2,4    # other worker counts (default 1 and nproc)
    python benchmarks/env_steps.py --quick            # smoke run, no results file

The cores are shared: the load average (``uptime``) is recorded before each
section, and ratios are only compared within one run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from render_settings import describe, time_settings, untouched_copy  # noqa: E402
from sim_throughput import MODES, run_workers, scene_kwargs, vector_env_rate  # noqa: E402

from vla.eval.stats import wilson_interval  # noqa: E402
from vla.sim import LiftExpert, RobosuiteEnv, make_env  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "env_steps.md"
SCENES = ("lift", "libero_spatial")
MODE_LABELS = {
    "raw_mujoco": "raw MuJoCo `mj_step` x substeps (physical limit)",
    "physics": "physics only (`step_physics`)",
    "render_step": "render every step (`step`)",
    "chunk8": "render at chunk boundaries, chunk 8 (`step_chunk`)",
}


def load() -> str:
    """``uptime``'s load averages (1, 5, 15 min): other agents share these cores."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def expert_success(seeds: int, noise_std: float) -> tuple[int, list[int]]:
    env = RobosuiteEnv(task="lift", cameras=("agentview",), image_size=16, max_episode_steps=200)
    expert, successes, lengths = LiftExpert(noise_std=noise_std, seed=0), 0, []
    try:
        for seed in range(seeds):
            env.reset(seed=seed)
            expert.reset()
            steps = 0
            while True:
                _, terminated, truncated, _ = env.step_physics(expert.act(env.privileged_state()))
                steps += 1
                if terminated or truncated:
                    break
            if terminated:
                successes += 1
                lengths.append(steps)
    finally:
        env.close()
    return successes, lengths


def throughput_section(scene: str, workers: list[int], steps: int) -> list[str]:
    kwargs = scene_kwargs(scene)
    lines = [f"### {scene}: env steps/s", "",
             f"`{kwargs['task']}`, cameras {list(kwargs['cameras'])} at {kwargs['image_size']}x{kwargs['image_size']}, "
             f"control 20 Hz, {steps} steps per worker per row, random actions in [-0.5, 0.5], resets off the clock.",
             ""]
    results = {}
    for n in workers:
        before = load()
        results[n] = run_workers(kwargs, n, MODES, steps)
        lines.append(f"- {n} worker(s): load average before {before}, after {load()}")
        print(f"{scene} x{n}: " + ", ".join(f"{m} {r['aggregate']:.1f}" for m, r in results[n].items()), flush=True)
    head = "| mode | " + " | ".join(f"{n} worker{'s' if n > 1 else ''}: steps/s (per core) [per CPU-s]"
                                     for n in workers)
    head += " | of the raw limit, per CPU-s |"
    lines += ["", "steps/s: wall clock, all workers together; (per core): that over the workers; [per CPU-s]: "
              "env steps per CPU-second of the worker processes (all threads), which other jobs' load "
              "hardly moves; last column: the 1-worker CPU rate over raw MuJoCo's.", "",
              head, "|---" * (len(workers) + 2) + "|"]
    one = workers[0]
    raw = results[one]["raw_mujoco"]["per_cpu_s"]
    for mode in MODES:
        cells = []
        for n in workers:
            r = results[n][mode]
            per_core = r["aggregate"] / min(n, os.cpu_count() or n)
            cells.append(f"{r['aggregate']:.1f} ({per_core:.1f}) [{r['per_cpu_s']:.1f}]")
        frac = results[one][mode]["per_cpu_s"] / raw
        lines.append(f"| {MODE_LABELS[mode]} | " + " | ".join(cells) + f" | {frac:.1%} |")
    lines.append("")
    if len(workers) > 1:
        n = workers[-1]
        scale = {m: results[n][m]["aggregate"] / results[one][m]["aggregate"] for m in MODES}
        lines.append(f"Scaling {one} -> {n} workers (ideal {n / one:.1f}x on idle cores): "
                     + ", ".join(f"{m} {s:.2f}x" for m, s in scale.items()) + ".")
        lines.append("")
    return lines


def overhead_section(scene: str, workers: list[int], steps: int, rounds: int) -> list[str]:
    """VectorEnv vs raw chunk8 rate, measured back to back ``rounds`` times (the load drifts)."""
    kwargs = scene_kwargs(scene)
    rows = []
    for n in workers:
        wall, cpu, before = [], [], load()
        for _ in range(rounds):
            raw = run_workers(kwargs, n, ("chunk8",), steps)["chunk8"]
            vec = vector_env_rate(kwargs, n, steps)
            wall.append(vec["aggregate"] / raw["aggregate"])
            cpu.append(vec["per_cpu_s"] / raw["per_cpu_s"])
            print(f"{scene} VectorEnv x{n}: {vec['aggregate']:.1f} vs raw {raw['aggregate']:.1f} steps/s; "
                  f"per CPU-s {vec['per_cpu_s']:.1f} vs {raw['per_cpu_s']:.1f}", flush=True)
        rows.append(f"| {scene} | {n} | {vec['aggregate']:.1f} | {raw['aggregate']:.1f} | "
                    f"{', '.join(f'{w:.0%}' for w in wall)} | {', '.join(f'{c:.0%}' for c in cpu)} | {before} |")
    return rows


def render_section(scene: str, frames: int) -> list[str]:
    kwargs = scene_kwargs(scene)
    env = make_env(**kwargs)
    try:
        env.reset(seed=0)
        model = untouched_copy(env)
        lines = [f"### {scene}: render cost per frame ({kwargs['image_size']}x{kwargs['image_size']}, "
                 f"wall: median of {frames} frames, CPU: their mean; load average before {load()})", "",
                 f"Scene: {describe(model)}.", "",
                 "| setting (cumulative) | " + " | ".join(f"`{c}` ms/frame: wall, CPU (mean abs diff)"
                                                          for c in env.cameras)
                 + " | renderer creation ms |",
                 "|---" * (len(env.cameras) + 2) + "|"]
        per_cam = {c: time_settings(model, env._env.sim.data._data, c, env.image_size, frames) for c in env.cameras}
    finally:
        env.close()
    for i, row in enumerate(per_cam[env.cameras[0]]):
        cells = [f"{per_cam[c][i]['ms']:.1f}, {per_cam[c][i]['cpu_ms']:.1f} ({per_cam[c][i]['diff']:.2f})"
                 for c in per_cam]
        lines.append(f"| {row['setting']} | " + " | ".join(cells) + f" | {row['create_ms']:.0f} |")
    first, last = per_cam[env.cameras[0]][0]["cpu_ms"], per_cam[env.cameras[0]][-1]["cpu_ms"]
    lines += ["", f"{env.cameras[0]}: {first:.1f} -> {last:.1f} CPU ms/frame ({first / last:.1f}x).", ""]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=320, help="env steps per worker per throughput row")
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=2, help="raw/VectorEnv pairs per overhead row")
    parser.add_argument("--frames", type=int, default=30, help="frames per render-setting row")
    parser.add_argument("--seeds", type=int, default=50, help="Lift expert episodes")
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--quick", action="store_true", help="40 steps, 5 frames, 3 seeds; no results file")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.frames, args.seeds, args.rounds = 40, 5, 3, 1
    workers = sorted({int(w) for w in args.workers.split(",")})
    scenes = [s for s in args.scenes.split(",") if s]

    uname = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    lines = ["# Simulation steps per second", "",
             f"- machine: `{uname}`, {os.cpu_count()} cores (shared with other jobs), no GPU",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- python {platform.python_version()}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
             f"- command: `python {' '.join(sys.argv)}`",
             f"- load average (1 / 5 / 15 min) at start: {load()}", ""]
    for scene in scenes:
        lines += throughput_section(scene, workers, args.steps)
    lines += ["### Framework overhead: VectorEnv rollouts with a trivial policy", "",
              "Chunk 8, cameras rendered at chunk boundaries, a fixed action chunk, the observations "
              "pickled back to the parent. Raw: the same env loop in as many bare worker processes "
              f"(no VectorEnv, no pipes), measured just before, {args.rounds} rounds; steps/s columns are the "
              "last round. Fraction by wall clock (follows other jobs' load) and by CPU time "
              "(parent + workers; the framework's own cost).", "",
              "| scene | workers | VectorEnv steps/s | raw env steps/s | fraction (wall) | fraction (CPU) "
              "| load before |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for scene in scenes:
        lines += overhead_section(scene, workers, args.steps, args.rounds)
    lines.append("")
    for scene in scenes:
        lines += render_section(scene, args.frames)

    expert_rows = [(noise, *expert_success(args.seeds, noise)) for noise in (0.0, 0.1)]
    lines += [f"### Lift scripted expert (`LiftExpert`), seeds 0..{args.seeds - 1}, max_episode_steps 200", "",
              "| action noise std | success | 95% Wilson interval | steps to success: mean / median / max |",
              "|---:|---:|---:|---:|"]
    for noise, successes, lengths in expert_rows:
        low, high = wilson_interval(successes, args.seeds)
        steps = f"{np.mean(lengths):.1f} / {np.median(lengths):.0f} / {max(lengths)}" if lengths else "-"
        lines.append(f"| {noise} | {successes}/{args.seeds} = {successes / args.seeds:.1%} | "
                     f"[{low:.1%}, {high:.1%}] | {steps} |")
    lines += ["", f"Load average at the end: {load()}"]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".md.tmp")
        tmp.write_text(table)
        tmp.replace(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

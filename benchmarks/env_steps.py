"""Lift env throughput (physics only, rendering every step, rendering at chunk
boundaries), render cost per frame, a 2-worker VectorEnv, and the scripted
expert's success rate with a 95% Wilson interval.

    python benchmarks/env_steps.py            # writes benchmarks/results/env_steps.md
    python benchmarks/env_steps.py --quick    # fewer steps and seeds, for a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vla.eval.stats import wilson_interval
from vla.sim import LiftExpert, RobosuiteEnv, VectorEnv

RESULTS = Path(__file__).resolve().parent / "results" / "env_steps.md"


def _actions(n: int) -> np.ndarray:
    # Moderate random motion: the arm moves and the gripper toggles, as in a rollout.
    return np.random.default_rng(0).uniform(-0.5, 0.5, (n, 7)).astype(np.float32)


def time_steps(env: RobosuiteEnv, total_steps: int, chunk: int | None, render: bool) -> float:
    """Env steps per second over ``total_steps`` (resets excluded from the clock)."""
    actions = _actions(total_steps)
    done_steps, elapsed, seed = 0, 0.0, 0
    while done_steps < total_steps:
        env.reset(seed=seed)
        seed += 1
        episode_left = env.max_episode_steps
        while episode_left > 0 and done_steps < total_steps:
            h = 1 if chunk is None else min(chunk, episode_left, total_steps - done_steps)
            batch = actions[done_steps : done_steps + h]
            start = time.perf_counter()
            if not render:
                env.step_physics(batch[0])
            elif chunk is None:
                env.step(batch[0])
            else:
                env.step_chunk(batch)
            elapsed += time.perf_counter() - start
            done_steps += h
            episode_left -= h
    return total_steps / elapsed


def time_render(frames: int, size: int) -> tuple[float, float]:
    """ms per frame of agentview: mujoco defaults vs our CameraRenderer settings."""
    import mujoco

    env = RobosuiteEnv(image_size=size)
    env.reset(seed=0)
    data = env._env.sim.data._data
    try:
        # A second robosuite model with untouched visual settings.
        plain_env = env._make_robosuite_env(env.control_freq)
        default = mujoco.Renderer(plain_env.sim.model._model, size, size)
        option = mujoco.MjvOption()
        option.geomgroup[0] = 0  # same geoms as CameraRenderer draws
        try:
            results = []
            for render in (
                lambda: (default.update_scene(data, camera="agentview", scene_option=option), default.render()),
                lambda: env._renderer.render_camera(data, "agentview"),
            ):
                render()
                start = time.perf_counter()
                for _ in range(frames):
                    render()
                results.append((time.perf_counter() - start) / frames * 1000)
        finally:
            default.close()
            plain_env.close()
    finally:
        env.close()
    return results[0], results[1]


def time_vector_env(num_envs: int, chunk: int, chunks: int) -> float:
    with VectorEnv(num_envs, {"task": "lift"}) as venv:
        venv.reset(list(range(num_envs)))
        actions = _actions(chunk * num_envs).reshape(num_envs, chunk, 7)
        venv.step_chunk(actions)  # warm-up
        start = time.perf_counter()
        for _ in range(chunks):
            results = venv.step_chunk(actions)
            if any(r[2] or r[3] for r in results):
                venv.reset(list(range(num_envs)))
        elapsed = time.perf_counter() - start
    return num_envs * chunk * chunks / elapsed


def expert_success(env: RobosuiteEnv, seeds: int, noise_std: float) -> tuple[int, list[int]]:
    expert, successes, lengths = LiftExpert(noise_std=noise_std, seed=0), 0, []
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
    return successes, lengths


def machine_lines(argv: list[str], load_before: tuple[float, float, float]) -> list[str]:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    load_after = os.getloadavg()
    return [
        f"- machine: `{uname}`",
        f"- nproc: {os.cpu_count()}",
        # The cores are shared: a load above nproc means other work slowed these figures.
        f"- load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- python {platform.python_version()}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}",
        f"- command: `python {' '.join(argv)}`",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="env steps per throughput row")
    parser.add_argument("--seeds", type=int, default=50, help="expert episodes")
    parser.add_argument("--quick", action="store_true", help="100 steps, 5 seeds; no results file")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds = 100, 5

    load_before = os.getloadavg()
    rows: list[tuple[str, str, str]] = []
    env = RobosuiteEnv(task="lift", cameras=("agentview",), image_size=64, max_episode_steps=200)
    try:
        env.reset(seed=0)
        for a in _actions(10):  # numba-compiled controller code warms up here
            env.step(a)
        for label, chunk, render in [
            ("physics only (no rendering)", None, False),
            ("render every step (`step`)", None, True),
            ("render at chunk boundaries, chunk 8 (`step_chunk`)", 8, True),
            ("render at chunk boundaries, chunk 16 (`step_chunk`)", 16, True),
        ]:
            sps = time_steps(env, args.steps, chunk, render)
            rows.append((label, f"{sps:.1f}", f"{1000 / sps:.2f}"))
            print(f"{label}: {sps:.1f} steps/s", flush=True)
        expert_rows = [(noise, *expert_success(env, args.seeds, noise)) for noise in (0.0, 0.1)]
    finally:
        env.close()

    sps = time_vector_env(2, 8, max(2, args.steps // 16))
    rows.append(("VectorEnv, 2 workers, chunk 8 (all envs together)", f"{sps:.1f}", f"{1000 / sps:.2f}"))
    print(f"vector env: {sps:.1f} steps/s", flush=True)

    render_rows = []
    for size in (64, 128):
        default_ms, cheap_ms = time_render(20 if args.quick else 60, size)
        render_rows.append((size, default_ms, cheap_ms))
        print(f"render {size}: default {default_ms:.1f} ms, cheap {cheap_ms:.1f} ms", flush=True)

    lines = ["# Lift env steps per second", "", *machine_lines(sys.argv, load_before), ""]
    lines += [
        f"Lift, Panda, OSC_POSE, control 20 Hz, one 64x64 `agentview` camera, {args.steps} steps per row, "
        "random actions in [-0.5, 0.5], resets excluded.",
        "",
        "| mode | env steps/s | ms/step |",
        "|---|---:|---:|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "| agentview render, one frame | mujoco defaults (ms) | `CameraRenderer` (ms) |",
        "|---|---:|---:|",
        *[f"| {s}x{s} | {d:.1f} | {c:.1f} |" for s, d, c in render_rows],
        "",
        f"Scripted expert (`LiftExpert`), seeds 0..{args.seeds - 1}, max_episode_steps 200:",
        "",
        "| action noise std | success | 95% Wilson interval | steps to success: mean / median / max |",
        "|---:|---:|---:|---:|",
    ]
    for noise, successes, lengths in expert_rows:
        low, high = wilson_interval(successes, args.seeds)
        steps = f"{np.mean(lengths):.1f} / {np.median(lengths):.0f} / {max(lengths)}" if lengths else "-"
        lines.append(
            f"| {noise} | {successes}/{args.seeds} = {successes / args.seeds:.1%} | "
            f"[{low:.1%}, {high:.1%}] | {steps} |"
        )
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

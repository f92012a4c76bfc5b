"""Env steps per second of one scene in 1..N concurrent worker processes, per mode.

Modes (one env step = one 20 Hz control step):
    raw_mujoco   ``mj_step`` on the scene's model, as many substeps as one env
                 step runs: the physical limit, no controller, no robosuite
    physics      ``step_physics``: robosuite step (OSC controller every substep), no image
    render_step  ``step``: every camera rendered after every step
    chunk8       ``step_chunk`` of 8 actions: cameras rendered once per chunk

``run_workers`` starts N processes that build the env, wait at a barrier and
time the same number of steps together; the aggregate is all their steps over
the wall time from the first start to the last finish (overlap not assumed).
Each also reports steps per CPU-second (process CPU time, all threads): on
shared cores the wall-clock rate follows other jobs' load, the CPU rate much less.
``vector_env_rate`` times ``sim/vector_env.py`` with a trivial policy, for the
framework overhead (its rate over the raw chunk8 rate of as many workers).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np

MODES = ("raw_mujoco", "physics", "render_step", "chunk8")
CHUNK = 8
# Long enough that no episode truncates inside a timed loop.
NO_LIMIT = 1_000_000


def actions(n: int, seed: int = 0) -> np.ndarray:
    # Moderate random motion: the arm moves and the gripper toggles, as in a rollout.
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (n, 7)).astype(np.float32)


def _substeps(env) -> int:
    inner = env._env
    return int(round(inner.control_timestep / inner.model_timestep))


def _time_raw_mujoco(env, steps: int) -> float:
    import mujoco

    model = env._env.sim.model._model
    data = mujoco.MjData(model)
    src = env._env.sim.data._data
    data.qpos[:], data.qvel[:], data.ctrl[:] = src.qpos, src.qvel, src.ctrl
    n = steps * _substeps(env)
    start = time.perf_counter()
    for _ in range(n):
        mujoco.mj_step(model, data)
    return time.perf_counter() - start


def time_mode(env, mode: str, steps: int, seed: int = 0) -> float:
    """Seconds for ``steps`` env steps in ``mode`` (resets excluded, but they are rare)."""
    if mode == "raw_mujoco":
        return _time_raw_mujoco(env, steps)
    acts = actions(steps, seed)
    elapsed, done = 0.0, 0
    while done < steps:
        h = CHUNK if mode == "chunk8" else 1
        batch = acts[done : done + h]
        start = time.perf_counter()
        if mode == "physics":
            _, terminated, truncated, _ = env.step_physics(batch[0])
        elif mode == "render_step":
            _, _, terminated, truncated, _ = env.step(batch[0])
        elif mode == "chunk8":
            _, _, terminated, truncated, _ = env.step_chunk(batch)
        else:
            raise ValueError(f"unknown mode {mode!r}; valid: {MODES}")
        elapsed += time.perf_counter() - start
        done += len(batch)
        if terminated or truncated:  # a random policy rarely succeeds; reset off the clock
            env.reset(seed=done)
    return elapsed


def _worker(rank: int, env_kwargs: dict, modes: tuple[str, ...], steps: int, barrier, queue) -> None:
    try:
        from vla.sim import make_env

        env = make_env(**env_kwargs)
        env.reset(seed=rank)
        for a in actions(10, seed=99):  # numba-compiled controller code warms up here
            env.step(a)
        for mode in modes:
            barrier.wait()
            start, cpu = time.monotonic(), time.process_time()  # CLOCK_MONOTONIC: one clock for all processes
            time_mode(env, mode, steps, seed=rank)
            # CPU seconds of this process (all threads: llvmpipe renders on its own threads).
            queue.put((rank, mode, start, time.monotonic(), time.process_time() - cpu))
        env.close()
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        barrier.abort()
        queue.put((rank, "error", repr(exc), 0.0, 0.0))
        raise


def run_workers(env_kwargs: dict, workers: int, modes: tuple[str, ...], steps: int) -> dict[str, dict[str, float]]:
    """Per mode: aggregate steps/s over the wall time, and steps per CPU-second (per core, whatever the load)."""
    ctx = mp.get_context("forkserver")  # as VectorEnv: no inherited GL or thread state
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, env_kwargs, modes, steps, barrier, queue), daemon=True)
             for r in range(workers)]
    for p in procs:
        p.start()
    rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
    try:
        for _ in range(workers * len(modes)):
            rank, mode, start, end, cpu = queue.get(timeout=600)
            if mode == "error":
                raise RuntimeError(f"worker {rank} failed: {start}")
            rows[mode].append((start, end, cpu))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    out = {}
    for mode, runs in rows.items():
        wall = max(e for _, e, _ in runs) - min(s for s, _, _ in runs)
        out[mode] = {"aggregate": workers * steps / wall, "per_cpu_s": workers * steps / sum(c for *_, c in runs)}
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vector_env_rate(env_kwargs: dict, workers: int, steps: int) -> dict[str, float]:
    """VectorEnv rollouts (chunk 8, trivial policy), all workers together: steps/s over the
    wall time, and steps per CPU-second of the workers and the parent together."""
    from vla.sim import VectorEnv

    chunks = max(2, steps // CHUNK)
    acts = actions(chunks * CHUNK).reshape(chunks, CHUNK, 7)
    with VectorEnv(workers, env_kwargs) as venv:
        obs = venv.reset(list(range(workers)))
        venv.step_chunk(np.repeat(acts[:1], workers, axis=0))  # warm-up
        executed = 0
        pids = [p.pid for p in venv._procs]
        cpu = time.process_time() + sum(_cpu_seconds(pid) for pid in pids)
        start = time.perf_counter()
        for c in range(chunks):
            # The trivial policy: a fixed chunk, after touching what a policy reads.
            _ = [o["state"].sum() + sum(int(im[0, 0, 0]) for im in o["images"].values()) for o in obs]
            results = venv.step_chunk(np.repeat(acts[c : c + 1], workers, axis=0))
            obs = [r[0] for r in results]
            executed += sum(r[4]["steps"] for r in results)
            if any(r[2] or r[3] for r in results):
                obs = venv.reset(list(range(workers)))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() + sum(_cpu_seconds(pid) for pid in pids) - cpu
    return {"aggregate": executed / elapsed, "per_cpu_s": executed / cpu}


def scene_kwargs(scene: str) -> dict[str, Any]:
    """The env each scene is benchmarked with: the cameras and size its policies use."""
    if scene == "lift":
        return {"task": "lift", "cameras": ("agentview",), "image_size": 64, "max_episode_steps": NO_LIMIT}
    if scene == "libero_spatial":
        return {"task": "libero_spatial/0", "cameras": ("agentview", "robot0_eye_in_hand"), "image_size": 128,
                "max_episode_steps": NO_LIMIT}
    raise ValueError(f"unknown scene {scene!r}; valid: lift, libero_spatial")

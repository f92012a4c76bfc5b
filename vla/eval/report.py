"""Evaluation report: eval_info.json (lerobot's schema plus per-task and CI), a table, a plot, videos."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from vla.eval.runner import EpisodeResult
from vla.eval.stats import wilson_interval


def _aggregate(all_episodes: list[EpisodeResult]) -> dict:
    # Infrastructure failures (crashed or hung workers) say nothing about the policy: counted, not scored.
    episodes = [e for e in all_episodes if not e.infra_failure]
    n = len(episodes)
    successes = sum(e.success for e in episodes)
    lo, hi = wilson_interval(successes, n)
    return {
        "avg_sum_reward": float(np.mean([e.sum_reward for e in episodes])) if n else 0.0,
        "avg_max_reward": float(np.mean([e.max_reward for e in episodes])) if n else 0.0,
        "pc_success": 100.0 * successes / n if n else 0.0,
        "pc_success_ci95": [100.0 * lo, 100.0 * hi],
        "n_episodes": n,
        "n_successes": successes,
        "avg_episode_steps": float(np.mean([e.steps for e in episodes])) if n else 0.0,
        "n_infra_failures": len(all_episodes) - n,
    }


def _identity(e: EpisodeResult) -> dict:
    """What names an episode's task: the env task, and for LIBERO its suite, index and name."""
    ident = {"task": e.task, "task_id": e.task_id or e.task}
    if e.suite:
        ident.update(suite=e.suite, task_index=e.task_index, task_name=e.task_name)
    return ident


def _task_order(key: str) -> tuple:
    """LIBERO tasks in suite order ("libero_90/2" before "libero_90/10"), others by name."""
    suite, _, index = key.rpartition("/")
    return (suite, int(index), "") if index.isdigit() else (key, -1, key)


def build_eval_info(episodes: list[EpisodeResult], eval_seconds: float, seed: int, video_paths: list[str]) -> dict:
    # One row per env task (not per instruction: libero_90 has tasks sharing one).
    by_task: dict[str, list[EpisodeResult]] = defaultdict(list)
    for e in episodes:
        by_task[e.task_id or e.task].append(e)
    aggregated = _aggregate(episodes)
    aggregated.update(eval_s=eval_seconds, eval_ep_s=eval_seconds / max(1, len(episodes)))
    seeds = sorted({e.seed for e in episodes}) or [seed]
    fixed = any(e.init_state_index is not None for e in episodes)
    return {
        "per_episode": [
            {"episode_ix": e.episode_index, "seed": e.seed, **_identity(e), "init_state_index": e.init_state_index,
             "max_episode_steps": e.max_episode_steps, "sum_reward": e.sum_reward, "max_reward": e.max_reward,
             "success": e.success, "steps": e.steps, "infra_failure": e.infra_failure}
            for e in episodes
        ],
        "per_task": [{**_identity(eps[0]), "max_episode_steps": eps[0].max_episode_steps,
                      **_aggregate(eps)}
                     for _, eps in sorted(by_task.items(), key=lambda kv: _task_order(kv[0]))],
        "aggregated": aggregated,
        "protocol": {"seeds": [seeds[0], seeds[-1]], "n_episodes": len(episodes),
                     "seed_use": ("episode i of every task: initial state i, policy noise from seed + i" if fixed else
                                  "episode i: initial state and policy noise from seed + i"),
                     "success": "any step succeeds"},
        "video_paths": video_paths,
    }


def _row_name(t: dict, width: int = 60) -> str:
    """A table row's task: the instruction, prefixed by the env task when that is not the instruction."""
    name = t["task"] if t.get("task_id", t["task"]) == t["task"] else f"{t['task_id']}: {t['task']}"
    return name if len(name) <= width else name[: width - 3] + "..."


def format_table(info: dict) -> str:
    rows = [("task", "episodes", "success %", "95% CI", "avg steps", "infra failures")]
    for t in info["per_task"] + [{"task": "overall", **info["aggregated"]}]:
        lo, hi = t["pc_success_ci95"]
        rows.append((_row_name(t), str(t["n_episodes"]), f"{t['pc_success']:.1f}", f"[{lo:.1f}, {hi:.1f}]",
                     f"{t['avg_episode_steps']:.0f}", str(t["n_infra_failures"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_videos(episodes: list[EpisodeResult], directory: Path, fps: int, upscale: int = 4) -> list[str]:
    import imageio.v2 as imageio

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for e in episodes:
        if not e.frames:
            continue
        outcome = "success" if e.success else "failure"
        if e.suite and e.init_state_index is not None:  # LIBERO: by task and state, libero_spatial_3_state_007_...
            path = directory / f"{e.suite}_{e.task_index}_state_{e.init_state_index:03d}_{outcome}.mp4"
        else:
            path = directory / f"episode_{e.episode_index:03d}_{outcome}.mp4"
        tmp = path.with_name(".tmp-" + path.name)
        with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, format="FFMPEG") as w:
            for frame in e.frames:  # nearest-neighbour upscale: 64 px is too small to watch
                w.append_data(np.kron(frame, np.ones((upscale, upscale, 1), dtype=np.uint8)))
        os.replace(tmp, path)
        paths.append(str(path))
    return paths


def plot_results(info: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    tasks = info["per_task"]
    names = [t.get("task_id", t["task"]) for t in tasks]
    rates = [t["pc_success"] for t in tasks]
    errs = np.array([[r - t["pc_success_ci95"][0], t["pc_success_ci95"][1] - r] for r, t in zip(rates, tasks)]).T
    ax1.bar(names, rates, yerr=errs, capsize=6 if len(names) <= 10 else 1, color="tab:blue")
    if len(names) > 3:  # suite task ids: upright labels would overlap
        ax1.tick_params(axis="x", labelrotation=90, labelsize=8 if len(names) <= 20 else 4)
    ax1.set_ylim(0, 100)
    ax1.set_ylabel("success rate (%), 95% CI")
    ax1.set_title(f"success over {info['aggregated']['n_episodes']} episodes")
    eps = info["per_episode"]
    ok = [e["steps"] for e in eps if e["success"]]
    bad = [e["steps"] for e in eps if not e["success"]]
    bins = np.linspace(0, max([e["steps"] for e in eps] + [1]), 20)
    ax2.hist([ok, bad], bins=bins, stacked=True, label=["success", "failure"], color=["tab:green", "tab:red"])
    ax2.set_xlabel("episode length (env steps)")
    ax2.set_ylabel("episodes")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)

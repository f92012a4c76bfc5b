"""`vla collect`: scripted expert demonstrations written as a LeRobot v3.0 dataset.

One robosuite task (``env.task``), or the tasks of a LIBERO suite (``suite``,
optionally ``task_ids``) into one dataset, each episode tagged with its task's
instruction. Attempts and kept episodes are counted per task and written to
``<output_dir>.logs/collect_summary.json``. LIBERO demos start by default from fresh
placements of LIBERO's own sampler, not from the suite's evaluation initial states
(``libero_init_states``); the dataset's info.json records that and the image convention
(``vla_provenance``), and `vla train` carries both into the policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla.atomic_io import write_json_atomic
from vla.config import CollectConfig, ConfigError, write_resolved_config
from vla.run_dir import claim_output_dir

STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_axis_angle_x", "eef_axis_angle_y", "eef_axis_angle_z",
               "gripper_qpos_left", "gripper_qpos_right"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "delta_axis_angle_x", "delta_axis_angle_y", "delta_axis_angle_z",
                "gripper"]
# Attempts per wanted episode before a task is given up on (the expert is failing systematically).
MAX_ATTEMPTS_PER_EPISODE = 3


def dataset_features(cameras: list[str], image_size: int, environment_state_dim: int = 0, video: bool = False) -> dict:
    """The dataset's features; cameras as 'video' (mp4 files) or 'image' (PNG in the parquet)."""
    features = {
        f"observation.images.{cam}": {"dtype": "video" if video else "image", "shape": [image_size, image_size, 3],
                                      "names": ["height", "width", "channels"]}
        for cam in cameras
    }
    features["observation.state"] = {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": STATE_NAMES}
    if environment_state_dim:  # robosuite's "object-state": the task's object poses, robomimic's low-dim "object"
        features["observation.environment_state"] = {"dtype": "float32", "shape": [environment_state_dim],
                                                     "names": None}
    features["action"] = {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": ACTION_NAMES}
    return features


@dataclass
class TaskTally:
    task: str
    instruction: str = ""
    attempts: int = 0
    kept: int = 0
    lengths: list[int] = field(default_factory=list)


def resolve_tasks(cfg: CollectConfig) -> list[str]:
    """The env task names to collect; ConfigError (listing the valid names) for bad input."""
    from vla.sim import list_libero_suites, list_libero_tasks
    from vla.sim.experts import EXPERTS, LIBERO_EXPERT_SUITES, libero_expert_suite

    if cfg.num_episodes < 1:
        raise ConfigError(f"num_episodes must be >= 1, got {cfg.num_episodes}")
    if not cfg.suite:
        if cfg.task_ids:
            raise ConfigError("task_ids selects tasks of a suite: set suite too (or drop task_ids)")
        if cfg.env.task not in EXPERTS and "/" not in cfg.env.task:
            raise ConfigError(f"no scripted expert for task {cfg.env.task!r}; tasks with experts: "
                              f"{', '.join(sorted(EXPERTS))} (or suite: {', '.join(sorted(LIBERO_EXPERT_SUITES))})")
        if "/" in cfg.env.task and libero_expert_suite(cfg.env.task.split("/", 1)[0]) is None:
            raise ConfigError(f"no scripted expert for {cfg.env.task!r}; LIBERO suites with experts: "
                              f"{', '.join(sorted(LIBERO_EXPERT_SUITES))}")
        return [cfg.env.task]
    suites = list_libero_suites()
    if cfg.suite not in suites:
        raise ConfigError(f"unknown suite {cfg.suite!r}; valid suites: {', '.join(suites)}")
    if libero_expert_suite(cfg.suite) is None:
        raise ConfigError(f"no scripted expert for suite {cfg.suite!r} (its tasks have not been checked with the "
                          f"task expert); suites with experts: {', '.join(sorted(LIBERO_EXPERT_SUITES))}")
    names = list_libero_tasks(cfg.suite)
    bad = [i for i in cfg.task_ids if not 0 <= i < len(names)]
    if bad:
        listing = "; ".join(f"{i}: {n}" for i, n in enumerate(names))
        raise ConfigError(f"task_ids {bad} out of range for {cfg.suite} (tasks 0..{len(names) - 1}: {listing})")
    return [f"{cfg.suite}/{i}" for i in (cfg.task_ids or range(len(names)))]


def _env_kwargs(cfg: CollectConfig, task: str) -> dict:
    kwargs = dict(cfg.env.env_kwargs(), task=task)
    if "/" in task:  # LIBERO: the suite's protocol step limit unless overridden
        kwargs["max_episode_steps"] = cfg.suite_max_steps or None
    return kwargs


def _reset_args(cfg: CollectConfig, task: str, attempt: int, env) -> dict:
    """reset() arguments of an attempt. robosuite: one seed per attempt. LIBERO: a fresh placement from
    LIBERO's sampler seeded by the attempt (default), or the suite's evaluation states in turn."""
    if "/" not in task:
        return {"seed": attempt}
    if cfg.libero_init_states == "sampled":
        return {"seed": attempt, "options": {"sample_placement": True}}
    return {"options": {"init_state_index": attempt % env.num_init_states}}


def provenance(cfg: CollectConfig, tasks: list[str], image_convention: str) -> dict:
    """What the dataset records about how it was made (info.json's vla_provenance; docs/LIBERO.md)."""
    libero = [t for t in tasks if "/" in t]
    if not libero:
        init_states = "robosuite reset(seed), seeds from collect.seed"
    elif cfg.libero_init_states == "sampled":
        init_states = "sampled"
    else:
        init_states = "evaluation"
    return {
        "image_convention": image_convention if cfg.env.cameras else "",
        "init_states": init_states,
        "evaluation_init_state_tasks": libero if init_states == "evaluation" else [],
        "seed": cfg.seed,
    }


def _record_episode(env, expert, writer, cameras: list[str], reset: dict,
                    with_env_state: bool = False) -> tuple[bool, int]:
    """Run one expert episode into the writer's pending episode: (success, steps)."""
    obs, _ = env.reset(**reset)
    expert.reset()
    success, done, steps = False, False, 0
    while not done:
        action = expert.act(env.privileged_state())
        frame = {f"observation.images.{cam}": obs["images"][cam] for cam in cameras}
        frame["observation.state"] = obs["state"].astype(np.float32)
        if with_env_state:
            frame["observation.environment_state"] = obs["environment_state"].astype(np.float32)
        frame["action"] = action.astype(np.float32)
        writer.add_frame(frame, task=obs["task"])
        obs, _, terminated, truncated, info = env.step(action)
        success |= bool(info["is_success"])
        done = terminated or truncated
        steps += 1
    return success, steps


def _collect_task(cfg: CollectConfig, task: str, writer, tb, bar, env=None) -> TaskTally:
    from vla.sim import make_env, make_expert

    tally = TaskTally(task)
    env = env or make_env(**_env_kwargs(cfg, task))
    with_env_state = "observation.environment_state" in writer.features
    try:
        tally.instruction = env.instruction
        expert = make_expert(task, noise_std=cfg.expert_noise, seed=cfg.seed)
        while tally.kept < cfg.num_episodes and tally.attempts < MAX_ATTEMPTS_PER_EPISODE * cfg.num_episodes:
            attempt = cfg.seed + tally.attempts
            reset = _reset_args(cfg, task, attempt, env)
            success, steps = _record_episode(env, expert, writer, cfg.env.cameras, reset, with_env_state)
            tally.attempts += 1
            tb.add_scalar(f"collect/{task}/expert_success", float(success), tally.attempts)
            tb.add_scalar(f"collect/{task}/episode_steps", steps, tally.attempts)
            if success or not cfg.only_successful:
                writer.save_episode()
                tally.lengths.append(steps)
                tally.kept += 1
                bar.update(1)
            else:
                writer.discard_episode()
    finally:
        env.close()
    return tally


def collect(cfg: CollectConfig, progress: bool = True) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    from vla.data import LeRobotDatasetWriter
    from vla.sim import make_env

    tasks = resolve_tasks(cfg)  # before anything is written: bad input leaves no trace
    if cfg.libero_init_states == "evaluation" and any("/" in t for t in tasks):
        print("warning: libero_init_states=evaluation: demos start from the suite's evaluation initial states; "
              "`vla eval` of a policy trained on them will warn that its results are not held-out")
    out = Path(cfg.output_dir)
    exists = ConfigError(f"output_dir {out} already exists; pass --overwrite=true to replace it "
                         "(the old dataset stays until the new one is complete), or choose another --output_dir")
    if out.exists() and not cfg.overwrite:  # before any env is built
        raise exists
    first_env = make_env(**_env_kwargs(cfg, tasks[0]))
    # The task's object state too (state-based policies read it), unless a suite's tasks differ in it.
    env_state_dim = 0 if cfg.suite else getattr(first_env, "environment_state_dim", 0)
    try:
        writer = LeRobotDatasetWriter(out, fps=cfg.env.control_freq, robot_type="panda",
                                      features=dataset_features(cfg.env.cameras, cfg.env.image_size, env_state_dim,
                                                               video=cfg.dataset.video),
                                      overwrite=cfg.overwrite,
                                      provenance=provenance(cfg, tasks, first_env.image_convention))
    except FileExistsError as exc:  # created since the check above
        first_env.close()
        raise exists from exc
    except BaseException:  # e.g. video features without PyAV: no env left running behind the error
        first_env.close()
        raise
    # Logs sit beside the dataset (not inside it: the dataset folder holds only the format's files).
    # A previous run's logs go, so TensorBoard never mixes two runs.
    log_dir = claim_output_dir(out.with_name(out.name + ".logs"), overwrite=True)
    tb = SummaryWriter(str(log_dir / "tb"))
    tallies: list[TaskTally] = []
    bar = tqdm(total=cfg.num_episodes * len(tasks), desc="collect", disable=not progress, dynamic_ncols=True)
    try:
        with writer:
            for i, task in enumerate(tasks):
                tallies.append(_collect_task(cfg, task, writer, tb, bar, env=first_env if i == 0 else None))
            if writer.num_episodes == 0:
                raise ConfigError(f"the expert succeeded on none of {sum(t.attempts for t in tallies)} attempts "
                                   f"({', '.join(tasks)}); lower collect.expert_noise or set "
                                   "collect.only_successful=false")
            path = writer.finalize()
    finally:
        bar.close()
        tb.close()
    write_resolved_config(cfg, log_dir)
    summary = _summary(cfg, tallies)
    write_json_atomic(log_dir / "collect_summary.json", summary)
    _print_summary(tallies)
    short = [t.task for t in tallies if t.kept < cfg.num_episodes]
    if short:
        print(f"warning: fewer than {cfg.num_episodes} successful episodes for {', '.join(short)} after "
              f"{MAX_ATTEMPTS_PER_EPISODE * cfg.num_episodes} attempts each")
    frames = sum(sum(t.lengths) for t in tallies)
    print(f"collected {summary['episodes']} episodes ({frames} frames) in {summary['attempts']} attempts; "
          f"dataset written to {path}; config, summary and TensorBoard logs in {log_dir}")
    print(json.dumps({k: summary[k] for k in ("episodes", "attempts", "expert_success_rate", "mean_length")}))
    return path


def _summary(cfg: CollectConfig, tallies: list[TaskTally]) -> dict:
    kept, tried = sum(t.kept for t in tallies), sum(t.attempts for t in tallies)
    lengths = [n for t in tallies for n in t.lengths]
    return {
        "episodes": kept,
        "attempts": tried,
        "expert_success_rate": kept / tried if cfg.only_successful and tried else None,
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
        "per_task": [{"task": t.task, "instruction": t.instruction, "attempts": t.attempts, "kept": t.kept,
                      "mean_length": float(np.mean(t.lengths)) if t.lengths else 0.0} for t in tallies],
    }


def _print_summary(tallies: list[TaskTally]) -> None:
    width = max(len(t.task) for t in tallies)
    print(f"{'task':<{width}}  kept/attempts  instruction")
    for t in tallies:
        print(f"{t.task:<{width}}  {t.kept:>4}/{t.attempts:<8}  {t.instruction}")

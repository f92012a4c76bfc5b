"""`vla eval`: evaluate a checkpoint on a task and write the report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from vla.config import ConfigError, EvalConfig, resolve_threads, write_resolved_config
from vla.atomic_io import write_json_atomic
from vla.eval.report import build_eval_info, format_table, plot_results, write_videos
from vla.eval.runner import EpisodeResult, evaluate_policy
from vla.policy.registry import load_policy
from vla.run_dir import claim_output_dir, removed_on_user_error


def check_compatible(policy, env_kwargs: dict) -> None:
    """Refuse before any episode starts if the policy cannot see what the env shows."""
    missing = [c for c in policy.config.cameras if c not in env_kwargs["cameras"]]
    if missing:
        raise ConfigError(f"policy needs cameras {policy.config.cameras}; the env config provides {list(env_kwargs['cameras'])} "
                         f"(missing {missing}): set --env.cameras")


def _trained_policy(policy):
    """The policy whose training data matters (a steered policy's frozen base)."""
    return getattr(policy, "base", policy)


def image_convention_for(policy, env_cfg, libero: bool) -> str:
    """The image convention the env renders in for this policy ("" = the env's own default).

    The policy's recorded training convention, unless env.image_convention names one (then they must
    agree). On LIBERO, a checkpoint of this project that records none (trained before it was recorded,
    when LIBERO demos were upright) is refused: the user says which. Published checkpoints (foreign)
    get LIBERO's published convention."""
    trained = _trained_policy(policy).config.image_convention
    explicit = env_cfg.image_convention
    if not policy.config.cameras:
        return explicit  # no images reach the policy (videos only)
    if explicit:
        if trained and trained != explicit:
            raise ConfigError(f"the policy was trained on {trained!r} images; --env.image_convention={explicit} would "
                              f"show it the scene in another orientation: drop the flag (the policy's is used)")
        return explicit
    if trained or not libero:
        return trained
    if getattr(_trained_policy(policy), "foreign_checkpoint", False):
        return "rot180"  # published LIBERO checkpoints were trained on rotated images
    raise ConfigError("the policy does not record the orientation of its training images (trained before "
                      "`vla train` recorded it). LIBERO now renders in the published convention, the raw render "
                      "rotated 180 degrees; LIBERO demos `vla collect` wrote before that were upright. Pass "
                      "--env.image_convention=upright for a policy trained on those, or --env.image_convention=rot180 "
                      "for one trained on published LIBERO data (docs/LIBERO.md)")


def env_kwargs_for(policy, env_cfg, libero: bool | None = None) -> dict:
    """The env config's arguments; a policy that reads no images (state_flow) gets an env that renders none.
    The image convention is the policy's training one (image_convention_for); libero defaults to env.task."""
    kwargs = env_cfg.env_kwargs()
    if not policy.config.cameras:
        kwargs["cameras"] = ()
    convention = image_convention_for(policy, env_cfg, "/" in env_cfg.task if libero is None else libero)
    kwargs.pop("image_convention", None)
    if convention:
        kwargs["image_convention"] = convention
    return kwargs


def _suite_tasks(cfg: EvalConfig) -> list:
    """The LIBERO tasks a suite run evaluates (LiberoTask each); ConfigError naming bad input."""
    from vla.sim import get_libero_task, list_libero_suites, list_libero_tasks

    suites = list_libero_suites()
    if cfg.suite not in suites:
        raise ConfigError(f"unknown suite {cfg.suite!r}; valid suites: {', '.join(suites)}")
    names = list_libero_tasks(cfg.suite)
    bad = [i for i in cfg.task_ids if not 0 <= i < len(names)]
    if bad:
        raise ConfigError(f"task_ids {bad} out of range for {cfg.suite} (tasks 0..{len(names) - 1})")
    tasks = [get_libero_task(f"{cfg.suite}/{i}") for i in (cfg.task_ids or range(len(names)))]
    # Episode i is initial state i: refuse before any worker starts if a task has fewer
    # (some perturbed suites ship 10 per task, not the protocol's 50).
    few = {t.index: len(t.init_states) for t in tasks if len(t.init_states) < cfg.n_episodes}
    if few:
        raise ConfigError(f"n_episodes={cfg.n_episodes} but {cfg.suite} has only {min(few.values())} initial states "
                          f"for task(s) {sorted(few)}: set --n_episodes={min(few.values())} or fewer")
    return tasks


def _label(episodes, task, limit: int) -> None:
    """Tell each episode which task (suite, index, name) it ran and under which step limit."""
    for e in episodes:
        e.task_id, e.max_episode_steps = task.full_name, limit
        e.suite, e.task_index, e.task_name = task.suite, task.index, task.name


TASKS_DIR = "tasks"  # one finished task's episodes per file: what --resume keeps


def _task_settings(cfg: EvalConfig, env_kwargs: dict, task, limit: int) -> dict:
    """What a finished task's results depend on; a resumed run must match them."""
    return {"policy": str(Path(cfg.policy).resolve()), "task": task.full_name, "n_episodes": cfg.n_episodes,
            "seed": cfg.seed, "max_episode_steps": limit, "n_action_steps": cfg.n_action_steps,
            "cameras": list(env_kwargs["cameras"]), "image_size": env_kwargs["image_size"],
            "image_convention": env_kwargs.get("image_convention"), "batched_inference": cfg.batched_inference,
            "n_videos": cfg.n_videos}


def _episode_from_json(row: dict) -> EpisodeResult:
    names = {f.name for f in dataclasses.fields(EpisodeResult)} - {"frames"}
    return EpisodeResult(**{k: v for k, v in row.items() if k in names})


def _finished_task(path: Path, settings: dict):
    """(episodes, seconds, video paths) of a task an earlier run finished, or None; ConfigError if that run
    used other settings."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("settings") != settings:
        differ = sorted(k for k in settings if saved.get("settings", {}).get(k) != settings[k])
        raise ConfigError(f"--resume: {path} was evaluated with other settings ({', '.join(differ)}); "
                          "rerun with those, or with --overwrite=true to start over")
    return [_episode_from_json(e) for e in saved["episodes"]], float(saved["seconds"]), list(saved["videos"])


def _evaluate_suite(cfg: EvalConfig, policy, env_kwargs: dict, tasks: list, progress: bool, out: Path):
    """Every (selected) task of a LIBERO suite, each from the suite's fixed initial states. Each finished
    task is written to out/tasks/ with its videos at once, so an interrupted run resumes (--resume=true)."""
    import time

    env_kwargs = dict(env_kwargs, max_episode_steps=cfg.suite_max_steps or None)
    seconds, episodes, videos, run_s = 0.0, [], [], []
    for n, task in enumerate(tasks):
        limit = cfg.suite_max_steps or task.max_episode_steps
        path = out / TASKS_DIR / f"{task.suite}_{task.index}.json"
        settings = _task_settings(cfg, env_kwargs, task, limit)
        finished = _finished_task(path, settings) if cfg.resume else None
        if finished is not None:
            task_episodes, task_s, task_videos = finished
            print(f"{task.full_name} ({n + 1}/{len(tasks)}): kept from the earlier run "
                  f"({sum(e.success for e in task_episodes)}/{len(task_episodes)} successes)")
        else:
            start = time.time()
            task_episodes, _ = evaluate_policy(policy, dict(env_kwargs, task=task.full_name), cfg.n_episodes,
                                               cfg.n_envs, cfg.seed, cfg.n_videos, cfg.n_action_steps, progress,
                                               fixed_init_states=True, desc=f"{task.full_name} ({n + 1}/{len(tasks)})",
                                               batched_inference=cfg.batched_inference,
                                               envs_per_worker=cfg.envs_per_worker)
            _label(task_episodes, task, limit)
            task_videos = write_videos([e for e in task_episodes if e.frames], out / "videos",
                                       fps=cfg.env.control_freq)
            task_s = time.time() - start
            rows = [{k: v for k, v in dataclasses.asdict(e).items() if k != "frames"} for e in task_episodes]
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {"settings": settings, "seconds": task_s, "videos": task_videos,
                                     "episodes": rows})
            run_s.append(task_s)
            left = len(tasks) - n - 1
            eta = f"; about {left * sum(run_s) / len(run_s) / 60:.0f} min left for {left} task(s)" if left else ""
            print(f"{task.full_name} ({n + 1}/{len(tasks)}): {sum(e.success for e in task_episodes)}/"
                  f"{len(task_episodes)} successes in {task_s:.0f} s{eta}", flush=True)
        for e in task_episodes:
            e.episode_index = len(episodes) + e.init_state_index  # unique across the run, resumed or not
        episodes.extend(task_episodes)
        videos.extend(task_videos)
        seconds += task_s
    return episodes, seconds, videos


def validate(cfg: EvalConfig) -> None:
    for name in ("n_envs", "envs_per_worker"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.resume and not cfg.suite:
        raise ConfigError("--resume=true continues a suite evaluation (--suite); a single-task evaluation "
                          "starts over (--overwrite=true)")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume=true and --overwrite=true contradict each other: choose one")


def _libero_protocol(cfg: EvalConfig, policy, env_kwargs: dict, tasks: list) -> dict:
    """eval_info.json's protocol section of a LIBERO run: what ran, the published protocol, the deviations."""
    from vla.eval.protocol import LIBERO_PROTOCOL, libero_deviations
    from vla.sim import list_libero_tasks
    from vla.sim.libero_env import NUM_NOOP_STEPS
    from vla.sim.libero_suites import suite_info

    suite = suite_info(tasks[0].suite)
    limits = {t.full_name: (cfg.suite_max_steps if cfg.suite else env_kwargs["max_episode_steps"])
              or t.max_episode_steps for t in tasks}
    convention = env_kwargs.get("image_convention", "rot180")
    deviations = libero_deviations(
        cameras=list(env_kwargs["cameras"]), image_size=env_kwargs["image_size"], image_convention=convention,
        control_freq=env_kwargs["control_freq"], episodes_per_task=cfg.n_episodes,
        task_ids=[t.index for t in tasks] if cfg.suite else [tasks[0].index],
        n_tasks=len(list_libero_tasks(suite.name)),
        step_limits=limits, protocol_limits={t.full_name: t.max_episode_steps for t in tasks},
        fixed_init_states=bool(cfg.suite))
    trained = _trained_policy(policy).config
    leaked = sorted(set(trained.train_eval_init_states or []) & set(limits))
    return {
        "suite": suite.name, "base_suite": suite.base, "perturbation": suite.perturbation or "none",
        "perturbation_description": suite.description,
        "init_states": ("the suite's own, episode i of each task = state i" if cfg.suite else
                        "drawn from the suite's by seed + i (env.task mode)"),
        "noop_steps_after_reset": NUM_NOOP_STEPS, "episodes_per_task": cfg.n_episodes,
        "cameras": list(env_kwargs["cameras"]), "image_size": env_kwargs["image_size"],
        "image_convention": convention, "control_freq": env_kwargs["control_freq"],
        "max_episode_steps": limits,
        "follows_protocol": not deviations, "deviations": deviations, "published_protocol": LIBERO_PROTOCOL,
        # None: the policy does not record where its demos started (trained before that was recorded).
        "trained_on_evaluation_init_states": leaked if trained.train_eval_init_states is not None else None,
    }


def _warn_libero(protocol: dict, policy) -> None:
    """The terminal's word on a LIBERO run that is not comparable with published numbers."""
    if protocol["deviations"]:
        print("warning: this run deviates from the published LIBERO protocol (docs/LIBERO.md; "
              "configs/eval/libero.yaml follows it):\n" + "\n".join(f"  - {d}" for d in protocol["deviations"]))
    leaked = protocol["trained_on_evaluation_init_states"]
    if leaked:
        print(f"warning: the policy's training demos started from the evaluation initial states of {', '.join(leaked)} "
              "(collected with libero_init_states=evaluation): its success there is not a held-out result")
    elif leaked is None and not getattr(_trained_policy(policy), "foreign_checkpoint", False):
        print("warning: the policy does not record where its training demos started; `vla collect` on LIBERO "
              "used the evaluation initial states before it recorded that (retrain on a fresh collection)")


def run_eval(cfg: EvalConfig, progress: bool = True, policy=None) -> dict:
    validate(cfg)  # before the output folder is claimed
    if cfg.resume and not (Path(cfg.output_dir) / TASKS_DIR).is_dir():
        raise ConfigError(f"--resume=true but {Path(cfg.output_dir) / TASKS_DIR} does not exist: nothing to resume")
    out = Path(cfg.output_dir) if cfg.resume else claim_output_dir(cfg.output_dir, cfg.overwrite, resumable=bool(cfg.suite))
    resolve_threads(cfg.num_threads)
    with removed_on_user_error(out, keep=TASKS_DIR):  # finished suite tasks stay, for --resume
        return _run_eval(cfg, out, progress, policy)


def _run_eval(cfg: EvalConfig, out: Path, progress: bool, policy) -> dict:
    from vla.sim import get_libero_task

    libero = bool(cfg.suite) or "/" in cfg.env.task
    tasks = _suite_tasks(cfg) if cfg.suite else None  # bad input refused before the policy loads
    policy = policy or load_policy(cfg.policy, map_location=cfg.device)
    steered_steps = policy.config.n_action_steps
    if getattr(policy, "checkpoint_type", "") == "steered" and cfg.n_action_steps not in (0, steered_steps):
        raise ConfigError(f"--n_action_steps={cfg.n_action_steps}: a steered policy was trained acting every "
                          f"{steered_steps} steps and plays exactly that many (leave --n_action_steps at 0)")
    env_kwargs = env_kwargs_for(policy, cfg.env, libero=libero)
    check_compatible(policy, env_kwargs)
    protocol = None
    if libero:
        protocol = _libero_protocol(cfg, policy, env_kwargs, tasks or [get_libero_task(cfg.env.task)])
        _warn_libero(protocol, policy)
    if cfg.suite:
        episodes, seconds, videos = _evaluate_suite(cfg, policy, env_kwargs, tasks, progress, out)
    else:
        episodes, seconds = evaluate_policy(policy, env_kwargs, cfg.n_episodes, cfg.n_envs, cfg.seed, cfg.n_videos,
                                            cfg.n_action_steps, progress, batched_inference=cfg.batched_inference,
                                            envs_per_worker=cfg.envs_per_worker)
        for e in episodes:
            e.task_id, e.max_episode_steps = cfg.env.task, cfg.env.max_episode_steps
        if libero:
            _label(episodes, get_libero_task(cfg.env.task), cfg.env.max_episode_steps)
        videos = write_videos([e for e in episodes if e.frames], out / "videos", fps=cfg.env.control_freq)
    info = build_eval_info(episodes, seconds, cfg.seed, videos)
    if protocol is not None:
        info["protocol"].update(protocol)
    write_resolved_config(cfg, out)  # with the results: an interrupted evaluation leaves nothing behind
    write_json_atomic(out / "eval_info.json", info)
    plot_results(info, out / "eval_report.png", title=f"{cfg.suite or cfg.env.task}: {cfg.policy}")
    with SummaryWriter(str(out / "tb")) as writer:
        writer.add_scalar("eval/pc_success", info["aggregated"]["pc_success"], 0)
        writer.add_scalar("eval/avg_sum_reward", info["aggregated"]["avg_sum_reward"], 0)
    print(format_table(info))
    if protocol is not None and protocol["deviations"]:
        print(f"not the published LIBERO protocol: {'; '.join(protocol['deviations'])}")
    print(f"eval_info.json, eval_report.png and {len(videos)} videos written to {out} "
          f"({seconds:.0f} s, {seconds / max(1, len(episodes)):.1f} s/episode over {len(episodes)} episodes)")
    return info

"""`vla eval`: evaluate a checkpoint on a task and write the report."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from vla.config import ConfigError, EvalConfig, resolve_threads, write_resolved_config
from vla.atomic_io import write_json_atomic
from vla.eval.report import build_eval_info, format_table, plot_results, write_videos
from vla.eval.runner import evaluate_policy
from vla.policy.registry import load_policy
from vla.run_dir import claim_output_dir, removed_on_user_error


def check_compatible(policy, env_kwargs: dict) -> None:
    """Refuse before any episode starts if the policy cannot see what the env shows."""
    missing = [c for c in policy.config.cameras if c not in env_kwargs["cameras"]]
    if missing:
        raise ConfigError(f"policy needs cameras {policy.config.cameras}; the env config provides {list(env_kwargs['cameras'])} "
                         f"(missing {missing}): set --env.cameras")


def env_kwargs_for(policy, env_cfg) -> dict:
    """The env config's arguments; a policy that reads no images (state_flow) gets an env that renders none."""
    kwargs = env_cfg.env_kwargs()
    if not policy.config.cameras:
        kwargs["cameras"] = ()
    return kwargs


def _evaluate_suite(cfg: EvalConfig, policy, env_kwargs: dict, progress: bool):
    """Every (selected) task of a LIBERO suite, each from the suite's fixed initial states."""
    import time

    from vla.sim import get_libero_task, list_libero_suites, list_libero_tasks

    suites = list_libero_suites()
    if cfg.suite not in suites:
        raise ConfigError(f"unknown suite {cfg.suite!r}; valid suites: {', '.join(suites)}")
    names = list_libero_tasks(cfg.suite)
    bad = [i for i in cfg.task_ids if not 0 <= i < len(names)]
    if bad:
        raise ConfigError(f"task_ids {bad} out of range for {cfg.suite} (tasks 0..{len(names) - 1})")
    task_ids = list(cfg.task_ids or range(len(names)))
    # Episode i is initial state i: refuse before any worker starts if a task has fewer
    # (some perturbed suites ship 10 per task, not the protocol's 50).
    few = {i: n for i in task_ids if (n := len(get_libero_task(f"{cfg.suite}/{i}").init_states)) < cfg.n_episodes}
    if few:
        raise ConfigError(f"n_episodes={cfg.n_episodes} but {cfg.suite} has only {min(few.values())} initial states "
                          f"for task(s) {sorted(few)}: set --n_episodes={min(few.values())} or fewer")
    env_kwargs = dict(env_kwargs, max_episode_steps=cfg.suite_max_steps or None)
    start, episodes = time.time(), []
    for i in task_ids:
        task_episodes, _ = evaluate_policy(policy, dict(env_kwargs, task=f"{cfg.suite}/{i}"), cfg.n_episodes,
                                           cfg.n_envs, cfg.seed, cfg.n_videos, cfg.n_action_steps, progress,
                                           fixed_init_states=True, desc=f"{cfg.suite}/{i}",
                                           batched_inference=cfg.batched_inference,
                                           envs_per_worker=cfg.envs_per_worker)
        for e in task_episodes:
            e.episode_index += len(episodes)  # unique across the run; the task field tells them apart
        episodes.extend(task_episodes)
    return episodes, time.time() - start


def validate(cfg: EvalConfig) -> None:
    for name in ("n_envs", "envs_per_worker"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(cfg, name)}")


def run_eval(cfg: EvalConfig, progress: bool = True, policy=None) -> dict:
    validate(cfg)  # before the output folder is claimed
    out = claim_output_dir(cfg.output_dir, cfg.overwrite)
    resolve_threads(cfg.num_threads)
    with removed_on_user_error(out):
        return _run_eval(cfg, out, progress, policy)


def _run_eval(cfg: EvalConfig, out: Path, progress: bool, policy) -> dict:
    policy = policy or load_policy(cfg.policy, map_location=cfg.device)
    env_kwargs = env_kwargs_for(policy, cfg.env)
    check_compatible(policy, env_kwargs)
    if cfg.suite:
        episodes, seconds = _evaluate_suite(cfg, policy, env_kwargs, progress)
    else:
        episodes, seconds = evaluate_policy(policy, env_kwargs, cfg.n_episodes, cfg.n_envs, cfg.seed, cfg.n_videos,
                                            cfg.n_action_steps, progress, batched_inference=cfg.batched_inference,
                                            envs_per_worker=cfg.envs_per_worker)
    videos = write_videos([e for e in episodes if e.frames], out / "videos", fps=cfg.env.control_freq)
    info = build_eval_info(episodes, seconds, cfg.seed, videos)
    if cfg.suite:
        from vla.sim.libero_suites import suite_info

        suite = suite_info(cfg.suite)
        info["protocol"].update(suite=cfg.suite, base_suite=suite.base, perturbation=suite.perturbation or "none",
                                perturbation_description=suite.description,
                                init_states="the suite's own, episode i = state i",
                                noop_steps_after_reset=10, episodes_per_task=cfg.n_episodes,
                                max_episode_steps=env_kwargs["max_episode_steps"] or "suite limit")
    write_resolved_config(cfg, out)  # with the results: an interrupted evaluation leaves nothing behind
    write_json_atomic(out / "eval_info.json", info)
    plot_results(info, out / "eval_report.png", title=f"{cfg.suite or cfg.env.task}: {cfg.policy}")
    with SummaryWriter(str(out / "tb")) as writer:
        writer.add_scalar("eval/pc_success", info["aggregated"]["pc_success"], 0)
        writer.add_scalar("eval/avg_sum_reward", info["aggregated"]["avg_sum_reward"], 0)
    print(format_table(info))
    print(f"eval_info.json, eval_report.png and {len(videos)} videos written to {out} "
          f"({seconds:.0f} s, {seconds / max(1, cfg.n_episodes):.1f} s/episode)")
    return info

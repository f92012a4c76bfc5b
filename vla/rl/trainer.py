"""`vla rl`: the RL training loop around the algorithms.

Per iteration: grouped rollouts with stochastic flow sampling -> the
algorithm's update (GRPO or PPO) -> LR schedule step -> TensorBoard scalars,
history.json and the success plot -> an atomic checkpoint with optimizer,
scheduler and RNG states. At the end: the final policy and an evaluation of
the deployed (deterministic ODE) policy with the eval runner.

Resume (`--resume=true`) restores everything from output_dir/checkpoints/last
and continues with the same numbers as a run that was never interrupted.
NaN or Inf in a loss, an advantage or a log-prob stops the run before the
weights change; the last good checkpoint stays as it was.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from vla.config import ConfigError, RLConfig, resolve_threads, write_resolved_config
from vla.eval.evaluate import check_compatible, env_kwargs_for
from vla.atomic_io import write_json_atomic
from vla.eval.report import build_eval_info, format_table, plot_results, write_videos
from vla.eval.runner import run_episodes
from vla.policy.finetune import apply_finetune_options
from vla.policy.registry import load_policy
from vla.policy.sampling import MODES, SDE_MODES, NoiseHead
from vla.rl.advantages import STD_SCOPES
from vla.rl import distributed
from vla.rl.backend import rollout_engine, validate_backend, vec_env_factory
from vla.rl.cpu_clock import process_tree_cpu_seconds
from vla.rl.filtered_bc import DemoFrames, SuccessBuffer, filtered_bc_update
from vla.rl.flow_surrogate import build_flow_surrogate
from vla.rl.fsdp import FSDPLearner, FullStateOptimizer, validate_fsdp
from vla.rl.grpo import grpo_update
from vla.rl.heads import NOISE_HEAD, VALUE_HEAD, ValueHead, has_head, load_head, save_head
from vla.rl.lapo import check_lapo_policy, lapo_update, validate_lapo
from vla.rl.losses import NonFiniteError
from vla.rl.plots import plot_success
from vla.rl.ppo import ppo_update
from vla.rl.rollout import Rollouts, SamplingSpec
from vla.rl.staleness import staleness_stats
from vla.rl.srpo.setup import prepare_srpo, validate_srpo
from vla.rl.srpo.srpo import srpo_update
from vla.rl.update import UpdateContext
from vla.run_dir import claim_output_dir
from vla.train.checkpoint import POLICY_DIR, read_training_state, restore_training_state, save_training_checkpoint
from vla.train.sft import cosine_with_warmup, seed_everything

# name -> (update function, needs a value head)
ALGORITHMS: dict[str, tuple[Callable, bool]] = {"grpo": (grpo_update, False), "ppo": (ppo_update, True),
                                                 "lapo": (lapo_update, True),
                                                 "filtered_bc": (filtered_bc_update, False),
                                                 "srpo": (srpo_update, False)}
SCHEDULES = ("constant", "cosine")
REWARDS = ("success", "shaped")
LOGPROB_LEVELS = ("chunk", "action")
SURROGATES = ("logprob", "fpo")

VecEnvFactory = Callable[[int, dict], object]


def validate(cfg: RLConfig) -> None:
    """Refuse a bad config before anything is loaded; messages name the flag."""
    if cfg.algo not in ALGORITHMS:
        raise ConfigError(f"--algo: unknown algorithm {cfg.algo!r}; valid algorithms: {', '.join(ALGORITHMS)} "
                          "(on-policy), noise, residual, zprl (off-policy steering)")
    s = cfg.sampling
    if cfg.surrogate not in SURROGATES:
        raise ConfigError(f"--surrogate: {cfg.surrogate!r} is not one of {', '.join(SURROGATES)}")
    if cfg.surrogate == "fpo" and cfg.fpo_samples < 1:
        raise ConfigError(f"--fpo_samples must be >= 1, got {cfg.fpo_samples}")
    needs_log_prob = cfg.algo != "filtered_bc" and cfg.surrogate != "fpo"
    if s.mode not in MODES or (s.mode == "ode" and needs_log_prob):
        raise ConfigError(f"--sampling.mode: {s.mode!r} is not a stochastic mode; valid: sde, noise "
                          "(ode only with --surrogate fpo or --algo filtered_bc, which need no chain log-prob)")
    if cfg.demos and cfg.algo != "filtered_bc":
        raise ConfigError(f"--demos is filtered_bc's demo set; --algo {cfg.algo} does not use it")
    if cfg.demo_weight < 0:
        raise ConfigError(f"--demo_weight must be >= 0, got {cfg.demo_weight}")
    if cfg.success_buffer < 0:
        raise ConfigError(f"--success_buffer must be >= 0 (0 = off), got {cfg.success_buffer}")
    if cfg.success_buffer and cfg.algo != "filtered_bc":
        raise ConfigError(f"--success_buffer is filtered_bc's; --algo {cfg.algo} does not use it")
    if cfg.algo == "filtered_bc":
        unused = [f"--{k}" for k in ("kl_coef", "anchor_coef") if getattr(cfg, k)]
        unused += ["--surrogate fpo"] if cfg.surrogate == "fpo" else []
        if unused:
            raise ConfigError(f"{', '.join(unused)}: filtered_bc has no ratio or reference policy to use them")
    if s.sde_mode not in SDE_MODES:
        raise ConfigError(f"--sampling.sde_mode: {s.sde_mode!r} is not one of {', '.join(SDE_MODES)}")
    if s.mixed_steps < 0:
        raise ConfigError(f"--sampling.mixed_steps must be >= 0 (0 = any denoising step), got {s.mixed_steps}")
    if s.mode == "sde" and not s.noise_level > 0:
        raise ConfigError(f"--sampling.noise_level must be > 0 for RL (0 is the deterministic ODE), got {s.noise_level}")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"--schedule: {cfg.schedule!r} is not one of {', '.join(SCHEDULES)}")
    for name in ("iterations", "n_groups", "group_size", "n_envs", "envs_per_worker", "epochs", "minibatch_size",
                 "grad_accumulation"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    validate_lapo(cfg)
    validate_srpo(cfg)
    if cfg.algo == "grpo" and cfg.group_size < 2:
        raise ConfigError("--group_size must be >= 2 for GRPO (a group of one has no baseline)")
    if not 0 <= cfg.clip_low < 1 or cfg.clip_high < 0:
        raise ConfigError(f"--clip_low must be in [0, 1) and --clip_high >= 0, got {cfg.clip_low}, {cfg.clip_high}")
    if cfg.kl_coef < 0 or cfg.anchor_coef < 0:
        raise ConfigError(f"--kl_coef and --anchor_coef must be >= 0, got {cfg.kl_coef}, {cfg.anchor_coef}")
    if cfg.reward not in REWARDS:
        raise ConfigError(f"--reward: {cfg.reward!r} is not one of {', '.join(REWARDS)}")
    if cfg.reward == "shaped" and "/" in cfg.env.task:
        raise ConfigError(f"--reward=shaped needs a robosuite task with a dense reward; {cfg.env.task} is a "
                          "LIBERO task (success only): use --reward=success")
    if "/" in cfg.env.task:
        _validate_libero_eval(cfg)
    if cfg.advantage_std not in STD_SCOPES:
        raise ConfigError(f"--advantage_std: {cfg.advantage_std!r} is not one of {', '.join(STD_SCOPES)}")
    if cfg.logprob_level not in LOGPROB_LEVELS:
        raise ConfigError(f"--logprob_level: {cfg.logprob_level!r} is not one of {', '.join(LOGPROB_LEVELS)}")
    if cfg.target_kl < 0:
        raise ConfigError(f"--target_kl must be >= 0 (0 = off), got {cfg.target_kl}")
    if cfg.dual_clip and cfg.dual_clip <= 1:
        raise ConfigError(f"--dual_clip must be > 1 (or 0 = off), got {cfg.dual_clip}")
    validate_backend(cfg)
    validate_fsdp(cfg)


def _validate_libero_eval(cfg: RLConfig) -> None:
    from vla.sim import get_libero_task

    states = len(get_libero_task(cfg.env.task).init_states)
    episodes = max(cfg.eval.n_episodes, cfg.eval.n_episodes_periodic if cfg.eval.every else 0)
    if episodes > states:
        raise ConfigError(f"--eval.n_episodes={episodes}: {cfg.env.task} is evaluated from its suite's fixed initial "
                          f"states, one episode each, and has {states}")


def group_seeds(cfg: RLConfig, iteration: int) -> list[int]:
    return [cfg.train_seed + iteration * cfg.n_groups + g for g in range(cfg.n_groups)]


def _make_heads(cfg: RLConfig, policy, source: Path, needs_value: bool):
    """Load the heads the run needs from the policy directory, or create them (and say so)."""
    noise_head = value_head = None
    if cfg.sampling.mode == "noise":
        if has_head(source, NOISE_HEAD):
            noise_head = load_head(source, NOISE_HEAD)
        else:
            noise_head = NoiseHead(policy.velocity_hidden_dim, policy.config.action_dim,
                                   std_min=cfg.sampling.noise_std_min, std_max=cfg.sampling.noise_std_max)
            print(f"{source} has no Flow-Noise head: created one (std in [{noise_head.std_min}, "
                  f"{noise_head.std_max}], trained with lr {cfg.noise_head_lr}, dropped at deployment)")
    if needs_value:
        if has_head(source, VALUE_HEAD):
            value_head = load_head(source, VALUE_HEAD)
        else:
            value_head = ValueHead(policy.pooled_dim, policy.config.state_dim, cfg.value_hidden)
            print(f"{source} has no value head: {cfg.algo.upper()} created one (MLP, width {cfg.value_hidden}, "
                  f"on the pooled prefix features + state, lr {cfg.value_lr})")
    device = policy.device
    return (None if noise_head is None else noise_head.to(device)), (None if value_head is None else value_head.to(device))


def _optimizer(cfg: RLConfig, policy, noise_head, value_head):
    groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": cfg.lr}]
    if noise_head is not None:
        groups.append({"params": list(noise_head.parameters()), "lr": cfg.noise_head_lr})
    if value_head is not None:
        groups.append({"params": list(value_head.parameters()), "lr": cfg.value_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    if cfg.schedule == "constant":
        schedule = lambda it: min(1.0, (it + 1) / cfg.warmup_iterations) if cfg.warmup_iterations else 1.0
    else:
        schedule = lambda it: cosine_with_warmup(it, cfg.warmup_iterations, cfg.iterations)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return optimizer, scheduler, [p for g in groups for p in g["params"]]


def _rollout_stats(rollouts: Rollouts) -> dict[str, float]:
    trajs = rollouts.trajectories
    return {
        "success_rate": float(np.mean([t.success for t in trajs])),
        "reward": float(np.mean([t.env_reward for t in trajs])),
        "episode_steps": float(np.mean([t.steps for t in trajs])),
        "decisions": float(len(rollouts)),
        "entropy": float(rollouts.entropy.mean()),
        "std": float(rollouts.std_mean.mean()),
        "old_log_prob": float(rollouts.log_probs.mean()),
    }


def _evaluate(policy, vec_env, n_episodes: int, seed: int, libero: bool, n_videos: int = 0, progress: bool = False):
    """A LIBERO task is evaluated by its protocol (episode i from the suite's fixed state i), others by seed."""
    start = time.time()
    policy.eval()
    episodes = run_episodes(policy, vec_env, n_episodes, seed, n_videos=n_videos, progress=progress, desc="rl eval",
                            fixed_init_states=libero)
    return episodes, time.time() - start


def train_rl(cfg: RLConfig, progress: bool = True, make_vec_env: VecEnvFactory | None = None) -> dict:
    """Run (or resume) RL post-training; returns a summary dict (also written to rl_summary.json).

    Under torchrun (WORLD_SIZE > 1) every process joins the process group and the update is data-parallel:
    rank 0 collects the rollouts and broadcasts them, each rank computes its shares of every minibatch and
    the gradients are summed (vla/rl/distributed.py); only rank 0 writes. Other ranks return {}."""
    validate(cfg)
    cfg.device, joined = distributed.join_from_env(cfg.device)
    try:
        return _train_rl(cfg, progress, make_vec_env)
    finally:
        if joined:
            distributed.leave()


def _train_rl(cfg: RLConfig, progress: bool, make_vec_env: VecEnvFactory | None) -> dict:
    update_fn, needs_value = ALGORITHMS[cfg.algo]
    resolve_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    last = out / "checkpoints" / "last"
    if cfg.resume and not last.is_dir():
        raise ConfigError(f"--resume=true but {last} does not exist: nothing to resume")
    if not cfg.resume and last.is_dir() and not cfg.overwrite:
        raise ConfigError(f"{out} already holds an RL run ({last}); pass --resume=true to continue it, "
                          "--overwrite=true to replace it, or choose another --output_dir")
    main = distributed.is_main()  # the one process that writes (every process when alone)
    progress = progress and main
    if not cfg.resume and main:
        claim_output_dir(out, cfg.overwrite, resumable=True)
    if cfg.resume:
        saved_algo = read_training_state(last).get("algo")
        if saved_algo != cfg.algo:
            raise ConfigError(f"--resume: {last} was trained with --algo {saved_algo}, this run asks for {cfg.algo}")
    seed_everything(cfg.seed)

    # ---- policy, heads, reference, optimizer (RNG states are restored after all modules are built)
    source = last / POLICY_DIR if cfg.resume else Path(cfg.policy)
    policy = load_policy(source, map_location=cfg.device)
    # before any rollout: a policy that does not think has nothing for LAPO to optimise, and one that does
    # cannot be trained by an algorithm whose ratios do not see its sampled thought
    check_lapo_policy(policy, source, cfg.algo)
    if cfg.freeze_vision or cfg.train_expert_only:
        policy.config.freeze_vision, policy.config.train_expert_only = cfg.freeze_vision, cfg.train_expert_only
        counts = apply_finetune_options(policy)
        print(f"RL trains {counts['trainable'] / 1e6:.2f}M parameters, {counts['frozen'] / 1e6:.2f}M frozen")
    if cfg.reward == "shaped":
        cfg.env.reward_shaping = True
    env_kwargs = env_kwargs_for(policy, cfg.env)
    try:
        check_compatible(policy, env_kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if cfg.sampling.mixed_steps > policy.config.num_inference_steps:
        raise ConfigError(f"--sampling.mixed_steps={cfg.sampling.mixed_steps} but the policy denoises in "
                          f"{policy.config.num_inference_steps} steps (num_inference_steps)")
    progress_reward, frame_camera = None, None
    if cfg.algo == "srpo":  # its frames' camera joins the env; its frozen encoder loads
        env_kwargs, frame_camera, progress_reward = prepare_srpo(cfg, policy, env_kwargs)
    if main:
        write_resolved_config(cfg, out)
    noise_head, value_head = _make_heads(cfg, policy, source, needs_value)
    # the update's modules; with --fsdp these are sharded and policy, noise_head, value_head become rank 0's full
    # copies, which collect, evaluate and are saved (vla/rl/fsdp.py)
    fsdp = FSDPLearner(policy, noise_head, value_head, cfg.device) if cfg.fsdp else None
    train_policy, train_noise_head, train_value_head = policy, noise_head, value_head
    if fsdp is not None:
        policy, noise_head, value_head = fsdp.rollout_modules()
    ref_policy = None
    if cfg.kl_coef > 0 or cfg.anchor_coef > 0:
        ref_policy = load_policy(cfg.policy, map_location=cfg.device).requires_grad_(False)
    optimizer, scheduler, params = _optimizer(cfg, train_policy, train_noise_head, train_value_head)
    try:
        demos = DemoFrames(cfg.demos, policy) if cfg.demos else None
    except ValueError as exc:  # DatasetError names the path and what is wrong with it
        raise ConfigError(f"--demos: {exc}") from exc
    buffer = SuccessBuffer(cfg.success_buffer) if cfg.algo == "filtered_bc" and cfg.success_buffer else None
    generator = torch.Generator().manual_seed(cfg.seed)
    start, history = 0, []
    if cfg.resume:
        saved = (last / SuccessBuffer.FILE).is_file()
        if buffer is None and saved:
            raise ConfigError(f"--resume: {last} holds a success buffer; resume with the --success_buffer it was "
                              "trained with (an exact resume replays it)")
        if buffer is not None:
            try:
                buffer.load(last)
            except FileNotFoundError as exc:
                raise ConfigError(f"--resume with --success_buffer: {exc}; resume with --success_buffer=0") from exc
            except ValueError as exc:
                raise ConfigError(f"--resume: {exc}") from exc
        state = restore_training_state(last, optimizer if fsdp is None else FullStateOptimizer(optimizer), scheduler,
                                       generator)
        start, history = state["iteration"], state["history"]
        print(f"resuming {cfg.algo} from {last} after iteration {start}")
    distributed.broadcast_parameters(params)  # data-parallel: rank 0's weights everywhere (they already agree)
    n_params = sum(p.numel() for p in params)
    print(f"{cfg.algo.upper()} on {cfg.env.task}: {cfg.n_groups} groups x {cfg.group_size} rollouts per iteration, "
          f"{cfg.iterations} iterations, {n_params / 1e6:.2f}M trainable parameters, sampling "
          f"{cfg.sampling.mode}/{cfg.sampling.sde_mode}")

    sampling = SamplingSpec(cfg.sampling.mode, cfg.sampling.sde_mode, cfg.sampling.noise_level,
                            cfg.sampling.mixed_steps)
    writer = SummaryWriter(str(out / "tb"), purge_step=start) if main else None
    env_steps = int(history[-1]["env_steps"]) if history else 0
    summary: dict = {}
    factory = make_vec_env or vec_env_factory(cfg)
    stopped_early = False
    saved_at = start  # iterations covered by the checkpoint on disk (0: none)
    try:
        # data-parallel: only rank 0 runs envs and collects; the other ranks receive its rollouts
        with factory(cfg.n_envs, env_kwargs) if main else contextlib.nullcontext() as vec_env:
            engine = rollout_engine(cfg, policy, vec_env, sampling, noise_head, value_head, frame_camera,
                                    version=start) if main else None
            bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc=f"rl {cfg.algo}",
                       disable=not progress, dynamic_ncols=True)
            for it in bar:
                # -- rollouts
                t0, cpu0 = time.perf_counter(), process_tree_cpu_seconds()
                policy.eval()
                rollouts = None
                if main:
                    rollouts = engine.collect(group_seeds(cfg, it), cfg.group_size, generator, policy_version=it)
                # the generator travels too: every rank then draws the update's shuffles as rank 0 does
                rollouts, generator_state = distributed.broadcast_from_main(
                    None if rollouts is None else (rollouts, generator.get_state()), cfg.device)
                generator.set_state(generator_state)
                rollout_s = time.perf_counter() - t0
                staleness = staleness_stats(rollouts.trajectories, it, cfg.max_staleness)  # `it` updates so far
                env_steps += rollouts.env_steps
                # -- update
                train_policy.train()
                ctx = UpdateContext(train_policy, optimizer, params, sampling, it, generator, train_noise_head,
                                    train_value_head,
                                    ref_policy, logprob_level=cfg.logprob_level, kl_to_ref=cfg.kl_coef > 0,
                                    anchor=cfg.anchor_coef > 0, project_out_blind=cfg.project_out_blind,
                                    demos=demos, success_buffer=buffer, progress_reward=progress_reward)
                if cfg.surrogate == "fpo":  # scored at the rollout weights, before any optimizer step
                    t1 = time.perf_counter()
                    ctx.flow_surrogate = build_flow_surrogate(train_policy, rollouts, cfg.fpo_samples,
                                                              rollouts.row_log_probs.shape[1], generator)
                    ctx.timings["logprob_s"] += time.perf_counter() - t1
                try:
                    stats = distributed.mean_over_ranks(update_fn(ctx, rollouts, cfg))  # data-parallel: over shares
                except NonFiniteError as exc:
                    kept = (f"the last good checkpoint is {last} (after iteration {saved_at})" if saved_at
                            else "no checkpoint had been written yet")
                    raise NonFiniteError(f"{exc}. Training stopped without saving; {kept}") from exc
                if fsdp is not None:  # every rank gathers the new weights; rank 0's full copies get them
                    fsdp.sync_rollout_copy()
                lr = scheduler.get_last_lr()[0]
                with warnings.catch_warnings():  # a skipped update (no optimizer step) still advances the schedule
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                    scheduler.step()
                push = {}
                if main and cfg.ray_inference == "worker" and it + 1 < cfg.iterations:
                    t1 = time.perf_counter()  # the rollout workers' copies: this update's weights, version it + 1
                    engine.push_weights(it + 1)
                    push["weight_push_s"] = time.perf_counter() - t1
                record = {"iteration": it, "env_steps": env_steps, "lr": lr, **_rollout_stats(rollouts), **staleness,
                          "rollout_s": rollout_s, **push, **ctx.timings, **stats}
                if main and cfg.eval.every and (it + 1) % cfg.eval.every == 0 and it + 1 < cfg.iterations:
                    episodes, _ = _evaluate(policy, vec_env, cfg.eval.n_episodes_periodic, cfg.eval.seed,
                                            "/" in cfg.env.task)
                    record["eval_success_rate"] = float(np.mean([e.success for e in episodes]))
                record["iteration_s"] = time.perf_counter() - t0
                record["cpu_s"] = process_tree_cpu_seconds() - cpu0
                history.append(record)
                if main:
                    _log(writer, record, it)
                    write_json_atomic(out / "history.json", {"algo": cfg.algo, "history": history})
                    plot_success(history, out / "success.png", title=f"{cfg.algo.upper()} on {cfg.env.task}")
                if cfg.algo == "filtered_bc":  # no ratio, KL or entropy: what it kept and its loss
                    bar.set_postfix(success=f"{record['success_rate']:.2f}",
                                    kept=int(record.get("kept_decisions", 0)), loss=f"{record.get('policy_loss', 0):.3f}")
                else:
                    bar.set_postfix(success=f"{record['success_rate']:.2f}", reward=f"{record['reward']:.2f}",
                                    kl=f"{record.get('approx_kl', 0):.1e}", clip=f"{record.get('clip_fraction', 0):.2f}",
                                    entropy=f"{record['entropy']:.1f}")
                finished = it + 1 == cfg.iterations
                stop_now = cfg.stop_after and it + 1 - start >= cfg.stop_after and not finished
                save_now = finished or stop_now or (cfg.save_every and (it + 1) % cfg.save_every == 0)
                saved_optimizer = optimizer if fsdp is None or not save_now else fsdp.gathered_optimizer(optimizer)
                if main and save_now:
                    save_training_checkpoint(last, policy, saved_optimizer, scheduler, generator, it + 1, history,
                                             extra={"algo": cfg.algo},
                                             write_beside_policy=lambda d: save_heads(d, noise_head, value_head),
                                             write_extra=None if buffer is None else buffer.save)
                    saved_at = it + 1
                if stop_now:
                    stopped_early = True
                    print(f"stopping after {it + 1 - start} iterations (--stop_after); resume with --resume=true")
                    break
            bar.close()
            if not stopped_early and main:
                summary = _finish(cfg, out, policy, noise_head, value_head, vec_env, history, progress)
    finally:
        if writer is not None:
            writer.close()
        distributed.use_fsdp(None)
    return summary


def _log(writer: SummaryWriter, record: dict, it: int) -> None:
    groups = {"success_rate": "rollout", "reward": "rollout", "episode_steps": "rollout", "env_steps": "rollout",
              "eval_success_rate": "eval", "rollout_s": "time", "logprob_s": "time", "update_s": "time",
              "iteration_s": "time", "reward_s": "time", "cpu_s": "time"}
    for key, value in record.items():
        if key != "iteration" and isinstance(value, (int, float)):
            writer.add_scalar(f"{groups.get(key, 'train')}/{key}", value, it)
        elif isinstance(value, list) and value:  # a distribution (SRPO's failure rewards)
            writer.add_histogram(f"train/{key}", np.asarray(value, dtype=np.float64), it)
    writer.flush()


def save_heads(policy_dir: Path, noise_head, value_head) -> None:
    if value_head is not None:
        save_head(value_head, policy_dir, VALUE_HEAD)
    if noise_head is not None:
        save_head(noise_head, policy_dir, NOISE_HEAD)


def _finish(cfg: RLConfig, out: Path, policy, noise_head, value_head, vec_env, history, progress) -> dict:
    """Save the final policy, evaluate it (deterministic ODE sampling, the deployed behaviour), summarise."""
    final = out / "policy"
    policy.save_pretrained(final)
    save_heads(final, noise_head, value_head)  # kept beside the policy for further PPO; deployment ignores them
    summary = {"algo": cfg.algo, "iterations": len(history), "env_steps": history[-1]["env_steps"] if history else 0,
               "success_rate_first": history[0]["success_rate"] if history else None,
               "success_rate_last": history[-1]["success_rate"] if history else None,
               "policy": str(final)}
    if cfg.eval.n_episodes > 0:
        episodes, seconds = _evaluate(policy, vec_env, cfg.eval.n_episodes, cfg.eval.seed, "/" in cfg.env.task,
                                      cfg.eval.n_videos, progress)
        videos = write_videos([e for e in episodes if e.frames], out / "eval" / "videos", fps=cfg.env.control_freq)
        info = build_eval_info(episodes, seconds, cfg.eval.seed, videos)
        (out / "eval").mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "eval" / "eval_info.json", info)
        plot_results(info, out / "eval" / "eval_report.png", title=f"{cfg.env.task}: {cfg.algo} {final}")
        print(format_table(info))
        summary["eval_pc_success"] = info["aggregated"]["pc_success"]
        summary["eval_pc_success_ci95"] = info["aggregated"]["pc_success_ci95"]
    write_json_atomic(out / "rl_summary.json", summary)
    print(f"RL finished: policy {final}, success plot {out / 'success.png'}, history {out / 'history.json'}, "
          f"TensorBoard: tensorboard --logdir {out / 'tb'}")
    return summary

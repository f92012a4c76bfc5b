"""`vla rl --algo noise|residual|zprl`: off-policy SAC steering a frozen flow policy.

    base policy (frozen) --+-- SteeringEnv: one step = one chunk, steered by the learner's action
                           +-- SAC (stable-baselines3): replay buffer, critics, auto-tuned entropy
    -> policy/: base + actor as one checkpoint (`vla eval`, `vla serve-ros` run it)
    -> eval/: the base and the steered policy on the same fixed states and flow noise, per-state changes

Warm-up plays the base policy unsteered (steering off) before SAC's updates start, so the first
transitions in the buffer are the base's own behaviour, not uniform random steering. Checkpoints
(checkpoints/last, at episode ends: vla/rl/steering/checkpoint.py) make `--resume=true` exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from vla.atomic_io import write_json_atomic
from vla.config import ConfigError, RLConfig, resolve_threads, write_resolved_config
from vla.eval.evaluate import check_compatible, env_kwargs_for
from vla.eval.report import build_eval_info, format_table, write_videos
from vla.eval.runner import run_episodes
from vla.policy.registry import load_policy
from vla.policy.steered.actor import SteeringActor
from vla.policy.steered.policy import SteeredPolicy
from vla.policy.steered.spaces import SPACES, make_space
from vla.rl.cpu_clock import process_tree_cpu_seconds
from vla.rl.plots import plot_success
from vla.rl.steering.checkpoint import restore_steering_checkpoint, save_steering_checkpoint
from vla.rl.steering.env import REWARDS, SteeringEnv
from vla.rl.steering.sac import steering_sac_class
from vla.run_dir import claim_output_dir
from vla.train.checkpoint import read_training_state
from vla.train.sft import seed_everything

DEFAULT_SCALE = {"noise": 1.5, "residual": 0.2, "zprl": 0.2}
MAX_SCALE = {"noise": 3.0, "residual": 1.0, "zprl": 1.0}  # beyond these the base policy no longer decides


def validate(cfg: RLConfig) -> None:
    o = cfg.offpolicy
    if cfg.algo not in SPACES:
        raise ConfigError(f"--algo {cfg.algo!r} is not an off-policy steering algorithm ({', '.join(SPACES)})")
    scale = o.scale or DEFAULT_SCALE[cfg.algo]
    if not 0 < scale <= MAX_SCALE[cfg.algo]:
        raise ConfigError(f"--offpolicy.scale={o.scale}: for --algo {cfg.algo} it must be in (0, {MAX_SCALE[cfg.algo]}]")
    for name in ("env_steps", "buffer_size", "batch_size", "utd", "n_critics"):
        if getattr(o, name) < 1:
            raise ConfigError(f"--offpolicy.{name} must be >= 1, got {getattr(o, name)}")
    if not 0 <= o.target_subset <= o.n_critics:
        raise ConfigError(f"--offpolicy.target_subset={o.target_subset} must be in [0, n_critics={o.n_critics}]")
    if min(o.warmup_steps, o.eval_every, o.save_every, o.stop_after) < 0:
        raise ConfigError("--offpolicy.warmup_steps, eval_every, save_every and stop_after must be >= 0")
    if not o.hidden or min(o.hidden) < 1:
        raise ConfigError(f"--offpolicy.hidden must list positive layer widths, got {o.hidden}")
    if not (o.lr > 0 and 0 < o.tau <= 1 and o.ent_coef_init > 0 and 0 < cfg.gamma <= 1):
        raise ConfigError("--offpolicy.lr, --offpolicy.ent_coef_init must be > 0, --offpolicy.tau and --gamma in (0, 1]")
    if cfg.reward not in REWARDS:
        raise ConfigError(f"--reward: {cfg.reward!r} is not one of {', '.join(REWARDS)}")
    if cfg.envs_per_worker < 1:
        raise ConfigError(f"--envs_per_worker must be >= 1, got {cfg.envs_per_worker}")


def _evaluate_in_process(env: SteeringEnv, actor, n_episodes: int, seed: int) -> float:
    """Success rate of the deterministic actor on the fixed states seed + i (each with its own flow noise)."""
    successes = 0
    for i in range(n_episodes):
        features, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            with torch.no_grad():
                a = actor(torch.as_tensor(features)[None])[0].numpy()
            features, _, terminated, truncated, info = env.step(a)
            done = terminated or truncated
        successes += bool(info["is_success"])
    return successes / max(1, n_episodes)


class Monitor:
    """Episode bookkeeping, TensorBoard, the progress bar, periodic evaluation and the NaN guard,
    called by SB3 after every decision."""

    LOSSES = ("train/actor_loss", "train/critic_loss", "train/ent_coef")

    def __init__(self, cfg: RLConfig, agent, eval_env: SteeringEnv, out: Path, progress: bool):
        self.cfg, self.agent, self.eval_env, self.out = cfg, agent, eval_env, out
        self.writer = SummaryWriter(str(out / "tb"))
        self.bar = tqdm(total=cfg.offpolicy.env_steps, desc=f"rl {cfg.algo}", unit="step", disable=not progress,
                        dynamic_ncols=True)
        self.env_steps = self.decisions = 0
        self.next_eval = cfg.offpolicy.eval_every or math.inf
        self.next_save = cfg.offpolicy.save_every or math.inf
        self.stop_at = math.inf  # env steps at which this invocation stops (set once a resume is restored)
        self.checkpoint_due = self.stop_due = False
        self.episodes: list[dict] = []
        self.history: list[dict] = []
        self.episode = {"return": 0.0, "sq_diff": 0.0, "diffs": 0}
        self.start = time.time()
        self.seconds_before = 0.0  # training wall time of the invocations before a resume
        self.eval_seconds = 0.0  # periodic evaluations, inside the training wall time
        self.cpu_start, self.cpu_seconds_before = process_tree_cpu_seconds(), 0.0

    @property
    def elapsed_seconds(self) -> float:
        """Training wall time so far, over every invocation of a resumed run."""
        return self.seconds_before + time.time() - self.start

    @elapsed_seconds.setter
    def elapsed_seconds(self, value: float) -> None:
        self.seconds_before, self.start = value, time.time()

    @property
    def train_cpu_seconds(self) -> float:
        """CPU seconds of this process tree spent training (periodic evaluations excluded), over every
        invocation of a resumed run: the budget unit the on-policy trainer reports too."""
        return self.cpu_seconds_before + process_tree_cpu_seconds() - self.cpu_start

    @train_cpu_seconds.setter
    def train_cpu_seconds(self, value: float) -> None:
        self.cpu_seconds_before, self.cpu_start = value, process_tree_cpu_seconds()

    def on_step(self, infos, rewards, dones) -> bool:
        info = infos[0]
        steps = int(info["steps"])
        self.env_steps += steps
        self.decisions += 1
        self.bar.update(steps)
        e = self.episode
        e["return"] += float(rewards[0])
        e["sq_diff"] += info["action_sq_diff"]
        e["diffs"] += info["action_diffs"]
        self._check_finite()
        if dones[0]:
            self._end_episode(bool(info["is_success"]))
            if self.env_steps >= self.next_save:  # taken before the next decision (train_steering's hook)
                self.checkpoint_due = True
                self.next_save += self.cfg.offpolicy.save_every * (1 + (self.env_steps - self.next_save)
                                                                   // self.cfg.offpolicy.save_every)
            self.stop_due = self.env_steps >= self.stop_at
        if self.env_steps >= self.next_eval:
            self.next_eval += self.cfg.offpolicy.eval_every
            self._periodic_eval()
        return self.env_steps < self.cfg.offpolicy.env_steps

    def _check_finite(self) -> None:
        values = self.agent.logger.name_to_value
        for key in self.LOSSES:
            if key in values and not math.isfinite(values[key]):
                raise FloatingPointError(f"{key.split('/')[1]} is {values[key]} at env step {self.env_steps}; the run "
                                         "stops without saving a policy (history.json and tb/ keep what came before)")

    def _end_episode(self, success: bool) -> None:
        e = self.episode
        record = {"episode": len(self.episodes), "env_steps": self.env_steps, "success": success,
                  "return": e["return"], "action_smoothness": e["sq_diff"] / max(1, e["diffs"]),
                  "train_cpu_minutes": self.train_cpu_seconds / 60}
        self.episodes.append(record)
        self.episode = {"return": 0.0, "sq_diff": 0.0, "diffs": 0}
        w = self.writer
        w.add_scalar("rollout/success_rate_last20", self._recent_success(), self.env_steps)
        w.add_scalar("rollout/return", record["return"], self.env_steps)
        w.add_scalar("rollout/action_smoothness", record["action_smoothness"], self.env_steps)
        w.add_scalar("train/buffer_size", self.agent.replay_buffer.size(), self.env_steps)
        for key, value in self.agent.logger.name_to_value.items():
            if key.startswith("train/"):
                w.add_scalar(key, value, self.env_steps)
        q = self._mean_q()
        if q is not None:
            w.add_scalar("train/q_mean", q, self.env_steps)
        self.bar.set_postfix(success=f"{self._recent_success():.2f}", episodes=len(self.episodes))

    def _recent_success(self) -> float:
        """Training success over the last 20 episodes (stochastic steering)."""
        return float(np.mean([r["success"] for r in self.episodes[-20:]]))

    def _mean_q(self) -> float | None:
        """Mean Q of the critics on a replayed batch under the actor's current steering."""
        buffer = self.agent.replay_buffer
        if buffer.size() < 2 or self.agent.num_timesteps < self.agent.learning_starts:
            return None
        with torch.no_grad():
            batch = buffer.sample(min(256, buffer.size()))
            actions, _ = self.agent.actor.action_log_prob(batch.observations)
            return float(torch.cat(self.agent.critic(batch.observations, actions), dim=1).mean())

    def _periodic_eval(self) -> None:
        start, cpu_start = time.time(), process_tree_cpu_seconds()
        train_cpu_minutes = self.train_cpu_seconds / 60
        actor = SteeringActor.from_sb3(self.agent.actor).eval()
        rate = _evaluate_in_process(self.eval_env, actor, self.cfg.eval.n_episodes_periodic, self.cfg.eval.seed)
        self.history.append({"env_steps": self.env_steps, "episodes": len(self.episodes),
                             "wall_s": self.elapsed_seconds, "train_cpu_minutes": train_cpu_minutes,
                             "eval_success_rate": rate,
                             **({"success_rate": self._recent_success()} if self.episodes else {})})
        self.writer.add_scalar("eval/success_rate", rate, self.env_steps)
        self.eval_seconds += time.time() - start
        self.cpu_seconds_before -= process_tree_cpu_seconds() - cpu_start  # the evaluation is not training
        self.writer.flush()
        write_json_atomic(self.out / "history.json", self.history)
        plot_success(self.history, self.out / "success.png", title=f"{self.cfg.algo} on {self.cfg.env.task}",
                     x="env_steps")

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def _callback(monitor: Monitor):
    from stable_baselines3.common.callbacks import BaseCallback

    class Callback(BaseCallback):
        def _on_step(self) -> bool:
            return monitor.on_step(self.locals["infos"], self.locals["rewards"], self.locals["dones"])

    return Callback()


def _final_evaluation(cfg: RLConfig, base, steered, env_kwargs: dict, out: Path, progress: bool) -> dict:
    """The base and the steered policy through `vla eval`'s runner on the same fixed states and noise."""
    from vla.sim import VectorEnv

    results = {}
    # At most two worker processes, as many envs as they hold.
    n_envs = max(1, min(cfg.n_envs, 2 * cfg.envs_per_worker))
    with VectorEnv(n_envs, env_kwargs, envs_per_worker=cfg.envs_per_worker) as vec_env:
        for name, policy in (("base", base), ("steered", steered)):
            start = time.time()
            episodes = run_episodes(policy, vec_env, cfg.eval.n_episodes, cfg.eval.seed, progress=progress,
                                    desc=f"eval {name}", n_videos=cfg.eval.n_videos if name == "steered" else 0)
            results[name] = (episodes, time.time() - start)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    episodes, seconds = results["steered"]
    videos = write_videos([e for e in episodes if e.frames], out / "eval" / "videos", fps=cfg.env.control_freq)
    info = build_eval_info(episodes, seconds, cfg.eval.seed, videos)
    base_info = build_eval_info(results["base"][0], results["base"][1], cfg.eval.seed, [])
    write_json_atomic(out / "eval" / "eval_info.json", info)
    write_json_atomic(out / "eval" / "base_eval_info.json", base_info)
    print(format_table(info))
    base_ok = [e.success for e in results["base"][0]]
    steered_ok = [e.success for e in episodes]
    return {"base_pc_success": base_info["aggregated"]["pc_success"],
            "base_pc_success_ci95": base_info["aggregated"]["pc_success_ci95"],
            "eval_pc_success": info["aggregated"]["pc_success"],
            "eval_pc_success_ci95": info["aggregated"]["pc_success_ci95"],
            "states_fixed": [i for i, (b, s) in enumerate(zip(base_ok, steered_ok)) if s and not b],
            "states_broken": [i for i, (b, s) in enumerate(zip(base_ok, steered_ok)) if b and not s]}


def _resume_settings(cfg: RLConfig) -> dict:
    """The settings an exact resume must share with the checkpoint's run (all but where and how long)."""
    settings = dataclasses.asdict(cfg)
    for key in ("resume", "overwrite", "output_dir"):
        settings.pop(key, None)
    settings["offpolicy"] = {k: v for k, v in settings["offpolicy"].items() if k not in ("env_steps", "stop_after")}
    return json.loads(json.dumps(settings))  # tuples -> lists, as the JSON checkpoint stores them


class StopForResume(Exception):
    """Raised between two decisions once --offpolicy.stop_after is reached and the checkpoint is written."""


def _make_agent(cfg: RLConfig, space, train_env: SteeringEnv):
    o = cfg.offpolicy
    SteeringSAC = steering_sac_class()
    agent = SteeringSAC(
        "MlpPolicy", train_env, learning_rate=o.lr, buffer_size=o.buffer_size, batch_size=o.batch_size,
        tau=o.tau, gamma=cfg.gamma, learning_starts=-(-o.warmup_steps // space.n_action_steps), train_freq=1,
        gradient_steps=o.utd, ent_coef=f"auto_{o.ent_coef_init}", target_entropy=o.target_entropy * space.dim,
        policy_kwargs={"net_arch": list(o.hidden), "n_critics": o.n_critics}, seed=cfg.seed, device=cfg.device,
        verbose=0)
    agent.env.seed(train_env.next_seed)  # SB3 seeded its first reset with cfg.seed: use the training stream
    agent.space, agent.warmup_rng = space, np.random.default_rng(cfg.seed)
    agent.target_subset, agent.entropy_in_target = o.target_subset, o.entropy_in_target
    with torch.no_grad():  # start near the base policy: small, state-independent exploration
        agent.actor.log_std.weight.zero_()
        agent.actor.log_std.bias.fill_(o.init_log_std)
        if o.zero_init_actor:  # ... around zero steering; the zeroed layer still gets gradients from its inputs
            agent.actor.mu.weight.zero_()
            agent.actor.mu.bias.zero_()
    return agent


def _trainable(agent) -> int:
    """Parameters the learner trains: the actor and the critics (not the Polyak-averaged targets)."""
    return sum(p.numel() for p in [*agent.actor.parameters(), *agent.critic.parameters()])


def _buffer_megabytes_per_100k(agent) -> float:
    buffer = agent.replay_buffer
    arrays = [getattr(buffer, name) for name in ("observations", "next_observations", "actions", "rewards", "dones",
                                                  "timeouts") if getattr(buffer, name, None) is not None]
    return sum(a.nbytes for a in arrays) / buffer.buffer_size * 100_000 / 2**20


def train_steering(cfg: RLConfig, progress: bool = True) -> dict:
    """Train a steering actor over the frozen policy; returns a summary (also in rl_summary.json)."""
    validate(cfg)
    o = cfg.offpolicy
    resolve_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    if torch.device(cfg.device).type != "cpu":
        raise ConfigError(f"--device={cfg.device}: the steering learner runs on the CPU for now (its networks are small)")
    base = load_policy(cfg.policy, map_location=cfg.device).requires_grad_(False)
    if isinstance(base, SteeredPolicy):
        raise ConfigError(f"--policy {cfg.policy} is already a steered policy: steer its base ({cfg.policy}/base)")
    if not hasattr(base, "steering_features"):
        raise ConfigError(f"--policy {cfg.policy} is a {base.checkpoint_type} policy; steering is built for the "
                          "state_flow and flow_vla policies (the actor reads their steering_features)")
    scale = o.scale or DEFAULT_SCALE[cfg.algo]
    space = make_space(cfg.algo, base, scale)  # refuses zprl on a policy without a bottleneck
    if cfg.reward == "shaped":
        cfg.env.reward_shaping = True
    env_kwargs = env_kwargs_for(base, cfg.env)
    check_compatible(base, env_kwargs)
    out, last = Path(cfg.output_dir), Path(cfg.output_dir) / "checkpoints" / "last"
    if cfg.resume:
        summary_file = out / "rl_summary.json"
        if summary_file.is_file() and not json.loads(summary_file.read_text()).get("stopped"):
            raise ConfigError(f"--resume: the run in {out} has finished ({summary_file}); start a new run to train further")
        state = read_training_state(last) if last.is_dir() else None
        if state is None:
            raise ConfigError(f"--resume=true but {last} does not exist: nothing to resume")
        if state["algo"] != cfg.algo or state["scale"] != scale:
            raise ConfigError(f"--resume: {last} steers with --algo {state['algo']} at scale {state['scale']}, this "
                              f"run asks for --algo {cfg.algo} at scale {scale}")
        changed = sorted(k for k, v in _resume_settings(cfg).items() if state["settings"].get(k) != v)
        if changed:
            raise ConfigError(f"--resume: {last} was trained with other settings ({', '.join(changed)}); an exact "
                              "resume needs the same ones (only --offpolicy.env_steps and stop_after may change)")
    else:
        out = claim_output_dir(cfg.output_dir, cfg.overwrite, resumable=True)
        write_resolved_config(cfg, out)

    from vla.sim import make_env

    with contextlib.ExitStack() as envs:  # both envs close on any exit: a NaN stop, Ctrl-C, a failed eval
        train_env = SteeringEnv(space, make_env(**env_kwargs), cfg.reward,
                                first_seed=cfg.train_seed + 100_000 * cfg.seed)
        envs.callback(train_env.close)
        eval_env = SteeringEnv(space, make_env(**{**env_kwargs, "reward_shaping": False}), "success", cfg.eval.seed)
        envs.callback(eval_env.close)
        agent = _make_agent(cfg, space, train_env)
        print(f"{cfg.algo}: steering a frozen {base.checkpoint_type} policy through {space.dim} dims "
              f"(scale {scale}); {_trainable(agent) / 1e6:.2f}M trainable parameters; "
              f"{o.env_steps} env steps, warm-up {o.warmup_steps}")
        monitor = Monitor(cfg, agent, eval_env, out, progress)
        if cfg.resume:
            restore_steering_checkpoint(last, agent, train_env, monitor)
            monitor.bar.update(monitor.env_steps)
            print(f"resumed from {last} at env step {monitor.env_steps} ({len(monitor.episodes)} episodes)")
        if o.stop_after:
            monitor.stop_at = monitor.env_steps + o.stop_after

        def before_decision() -> None:
            if monitor.checkpoint_due or monitor.stop_due:
                save_steering_checkpoint(last, agent, train_env, monitor,
                                         {"algo": cfg.algo, "scale": scale, "settings": _resume_settings(cfg)})
                monitor.checkpoint_due = False
            if monitor.stop_due:
                raise StopForResume

        agent.before_decision = before_decision
        try:
            agent.learn(total_timesteps=10**12, callback=_callback(monitor), log_interval=None,
                        reset_num_timesteps=not cfg.resume)
        except StopForResume:
            stopped = {"algo": cfg.algo, "env_steps": monitor.env_steps, "episodes": len(monitor.episodes),
                       "stopped": True, "checkpoint": str(last)}
            write_json_atomic(out / "episodes.json", monitor.episodes)
            write_json_atomic(out / "rl_summary.json", stopped)
            print(f"stopped at env step {monitor.env_steps} (--offpolicy.stop_after), checkpoint {last}; "
                  "continue with --resume=true")
            return stopped
        finally:
            monitor.close()
        train_s, train_cpu_minutes = monitor.elapsed_seconds, monitor.train_cpu_seconds / 60
        steered = SteeredPolicy(base, cfg.algo, scale, SteeringActor.from_sb3(agent.actor)).eval()
        steered.save_pretrained(out / "policy")
        write_json_atomic(out / "episodes.json", monitor.episodes)
        eps = monitor.episodes
        summary = {"algo": cfg.algo, "scale": scale, "env_steps": monitor.env_steps, "episodes": len(eps),
                   "decisions": monitor.decisions, "train_s": train_s, "eval_s": monitor.eval_seconds,
                   "train_cpu_minutes": train_cpu_minutes,
                   "policy": str(out / "policy"), "trainable_parameters": _trainable(agent),
                   "update_s": agent.update_seconds, "replay_buffer_mb_per_100k": _buffer_megabytes_per_100k(agent),
                   "train_success_first100": float(np.mean([e["success"] for e in eps[:100]])) if eps else None,
                   "train_success_last100": float(np.mean([e["success"] for e in eps[-100:]])) if eps else None,
                   "action_smoothness_last100":
                       float(np.mean([e["action_smoothness"] for e in eps[-100:]])) if eps else None}
        if cfg.eval.n_episodes > 0:
            summary.update(_final_evaluation(cfg, base, steered, env_kwargs, out, progress))
            print(f"fixed evaluation on {cfg.eval.n_episodes} states: base {summary['base_pc_success']:.1f}% -> "
                  f"steered {summary['eval_pc_success']:.1f}% (fixed {len(summary['states_fixed'])} states, "
                  f"broke {len(summary['states_broken'])})")
    write_json_atomic(out / "rl_summary.json", summary)
    print(f"RL finished: policy {out / 'policy'}, history {out / 'history.json'}, "
          f"TensorBoard: tensorboard --logdir {out / 'tb'}")
    return json.loads(json.dumps(summary))

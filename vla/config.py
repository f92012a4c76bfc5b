"""Typed run configurations for every `vla` command, parsed with draccus.

`--config FILE.yaml` gives the base values and dotted flags override them
(`--train.steps=100`). Errors name the key and the file. Every command writes
its resolved config next to its outputs (write_resolved_config).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import draccus

from vla.policy.config import PolicyConfig

T = TypeVar("T")


class ConfigError(ValueError):
    pass


@dataclass
class EnvConfig:
    task: str = "lift"
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    image_size: int = 64
    max_episode_steps: int = 200
    control_freq: int = 20
    # robosuite tasks: the staged dense reward instead of the sparse success reward (RL's reward=shaped).
    reward_shaping: bool = False

    def env_kwargs(self) -> dict:
        kwargs = dict(task=self.task, cameras=tuple(self.cameras), image_size=self.image_size,
                      max_episode_steps=self.max_episode_steps, control_freq=self.control_freq)
        if self.reward_shaping:  # only robosuite tasks take it
            kwargs["reward_shaping"] = True
        return kwargs


@dataclass
class CollectConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    output_dir: str = "outputs/demos/lift"
    num_episodes: int = 20
    # Demo seeds start here; evaluation uses a disjoint range (EvalConfig.seed).
    seed: int = 0
    # Gaussian noise on the expert's actions, for more varied demonstrations.
    expert_noise: float = 0.0
    # Keep only episodes the expert finished successfully.
    only_successful: bool = True
    overwrite: bool = False
    # A LIBERO suite with a scripted expert (libero_spatial, libero_object) instead of env.task: each
    # selected task gets num_episodes demos, attempt j from the suite's initial state (seed + j) mod N,
    # under the suite's step limit, with the task's instruction as the dataset task. One dataset in all.
    suite: str = ""
    # Only these task indices of the suite (empty = all).
    task_ids: list[int] = field(default_factory=list)
    # Step limit override for suites (0 = the suite's protocol limit).
    suite_max_steps: int = 0


@dataclass
class TrainConfig:
    dataset: str = "outputs/demos/lift"
    output_dir: str = "outputs/train/lift"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    # Random image shift in pixels (DrQ-style augmentation; 0 disables).
    image_shift: int = 4
    seed: int = 0
    log_every: int = 25
    save_every: int = 1000
    device: str = "cpu"
    # 0 = half the cores (see resolve_threads).
    num_threads: int = 0


@dataclass
class EvalConfig:
    policy: str = "outputs/train/lift/policy"
    output_dir: str = "outputs/eval/lift"
    env: EnvConfig = field(default_factory=EnvConfig)
    n_episodes: int = 50
    n_envs: int = 2
    # Episode i starts from the initial state of seed + i.
    seed: int = 100_000
    n_videos: int = 3
    device: str = "cpu"
    # Override the policy's n_action_steps (actions executed per predicted chunk); 0 keeps it.
    n_action_steps: int = 0
    # 0 = half the cores (see resolve_threads).
    num_threads: int = 0
    # A LIBERO suite (libero_spatial, libero_object, libero_goal, libero_10, libero_90, or a LIBERO-PRO
    # variant) instead of env.task: every task of the suite, episode i from the suite's initial state i,
    # the suite's step limit (ALGORITHMS.md section 6). n_episodes is then per task (protocol: 50).
    suite: str = ""
    # Only these task indices of the suite (empty = all).
    task_ids: list[int] = field(default_factory=list)
    # Step limit override for suites (0 = the suite's protocol limit).
    suite_max_steps: int = 0


def parse_config(cls: type[T], argv: list[str]) -> T:
    """Parse `--config FILE` plus dotted overrides into cls; errors name the key and the file."""
    argv = list(argv)
    config_path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config_path = argv[i + 1]
            del argv[i : i + 2]
            break
        if arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
            del argv[i]
            break
    source = f"config file {config_path}" if config_path else "command line"
    if config_path is not None and not Path(config_path).is_file():
        raise ConfigError(f"config file {config_path} does not exist")
    try:
        return draccus.parse(config_class=cls, config_path=config_path, args=argv)
    except SystemExit as exc:  # argparse exits on unknown flags after printing the reason
        raise ConfigError(f"bad command-line arguments {argv} for {cls.__name__} (see the message above)") from exc
    except Exception as exc:  # draccus raises several types; the message names the key
        raise ConfigError(f"{source}: {_explain(exc)}") from exc


def _explain(exc: BaseException) -> str:
    """draccus wraps errors raised in __post_init__; surface the innermost reason too."""
    messages, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if str(exc) and str(exc) not in messages:
            messages.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(reversed(messages)) if len(messages) > 1 else (messages[0] if messages else "invalid config")


def write_resolved_config(config, directory: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the fully resolved config (atomically) next to a run's outputs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_suffix(".yaml.tmp")
    with open(tmp, "w") as f:
        draccus.dump(config, f)
    tmp.replace(path)
    return path


def resolve_threads(num_threads: int) -> int:
    """Set torch's intra-op threads; 0 means half the cores.

    Measured on the 2-core machine: with both cores busy (env workers, another
    job), 2 torch threads made an SFT step 80x slower than 1 thread (9.3 s vs
    112 ms) because OpenMP barriers wait for descheduled threads. Leaving a
    core free is the safer default.
    """
    import torch

    n = num_threads if num_threads > 0 else max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(n)
    return n


def print_err(msg: str) -> None:
    print(msg, file=sys.stderr)


# ----------------------------------------------------------------- RL post-training
@dataclass
class SamplingConfig:
    """Stochastic flow sampling for RL (ALGORITHMS.md section 1)."""

    # "sde" (Flow-SDE) or "noise" (Flow-Noise: learned std, bounded, dropped at deployment);
    # "ode" (the deployed sampler, exploration from the initial noise only) needs surrogate "fpo".
    mode: str = "sde"
    # "mixed": one random stochastic denoising step per rollout (pi-RL's default); "joint": every step.
    sde_mode: str = "mixed"
    # Mixed mode draws its stochastic step from the first mixed_steps denoising steps (0 = all of them).
    # Early steps put more of the exploration into the log-prob; on Lift that made RL worse (docs/RL.md).
    mixed_steps: int = 0
    # Flow-SDE noise level a; 0 gives the deterministic Euler ODE.
    noise_level: float = 0.5
    # Flow-Noise std bounds (pi-RL's).
    noise_std_min: float = 0.08
    noise_std_max: float = 0.16


@dataclass
class RLEvalConfig:
    # Deterministic (ODE) evaluation of the deployed policy at the end of training; 0 skips it.
    n_episodes: int = 50
    # Episode i starts from the initial state of seed + i (disjoint from training seeds).
    seed: int = 100_000
    n_videos: int = 0
    # Also evaluate every this many iterations (n_episodes_periodic episodes each); 0 = only at the end.
    every: int = 0
    n_episodes_periodic: int = 20


@dataclass
class RLConfig:
    """`vla rl`: policy-gradient post-training of a flow policy in simulation.

    Sized so one Lift iteration takes about a minute on 2 CPU cores."""

    # "grpo" or "ppo" (the trainer lists the valid names).
    algo: str = "grpo"
    # Supervised policy checkpoint to start from (also the KL reference).
    policy: str = "outputs/quickstart/train/policy"
    output_dir: str = "outputs/rl/lift"
    # Shorthand for env.task (`vla rl --task lift`).
    task: str | None = None
    env: EnvConfig = field(default_factory=EnvConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: RLEvalConfig = field(default_factory=RLEvalConfig)
    iterations: int = 30
    # Rollouts per iteration = n_groups * group_size; a group shares its initial state.
    n_groups: int = 4
    group_size: int = 4
    # Parallel env workers (processes).
    n_envs: int = 4
    # Group g of iteration i resets from train_seed + i * n_groups + g (disjoint from eval seeds).
    train_seed: int = 1_000_000
    # Which policy weights RL trains: everything (default), everything but the vision tower
    # (freeze_vision), or only the action expert (train_expert_only; the VLM side stays the SFT one).
    freeze_vision: bool = False
    train_expert_only: bool = False
    # Optimisation.
    lr: float = 1e-5
    noise_head_lr: float = 1e-4
    value_lr: float = 1e-4
    weight_decay: float = 0.0
    # "constant" or "cosine" (per iteration, after warmup_iterations of linear warmup).
    schedule: str = "constant"
    warmup_iterations: int = 0
    grad_clip: float = 1.0
    epochs: int = 2
    # Decisions (chunk boundaries) per forward/backward pass; grad_accumulation consecutive minibatches of an
    # epoch make one optimizer step (their mean gradient): the memory of one minibatch, the noise of several.
    minibatch_size: int = 64
    grad_accumulation: int = 1
    # Policy loss: ratio clipped to [1 - clip_low, 1 + clip_high]; dual_clip > 1 enables dual clip (0 = off).
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float = 0.0
    # What one PPO ratio covers: "chunk" (a decision: log-prob summed over the executed rows and action
    # dims, ALGORITHMS.md's default) or "action" (one executed action row; its decision's advantage).
    # Per-row ratios are clipped one by one, so a policy step may move each row as far as "chunk"
    # lets the whole decision move (see docs/RL.md).
    logprob_level: str = "chunk"
    # What stands in the ratio for log pi(action): "logprob" (the sampled chain's exact Flow-SDE / Flow-Noise
    # log-prob, ALGORITHMS.md section 1) or "fpo" (minus the executed chunk's flow-matching loss at
    # fpo_samples fixed (t, eps) pairs, Flow Policy Optimization; works with any sampling mode, "ode"
    # included, and credits all of an action's randomness, not only the stochastic step's; docs/RL.md).
    surrogate: str = "logprob"
    fpo_samples: int = 4
    # Remove from each minibatch's policy gradient its component along the gradient of the minibatch's mean
    # (surrogate) log-prob: the reward-blind "make what the policy did more likely" direction that FPO's
    # surrogate adds whenever a minibatch's advantages do not cancel (vla/rl/update.py, docs/RL.md).
    project_out_blind: bool = False
    # Stop an update's epochs once a minibatch's approximate KL to the rollout policy exceeds this (0 = off).
    target_kl: float = 0.0
    # Weight of the k3 KL to the initial policy (0 = no reference policy is kept).
    kl_coef: float = 0.0
    # Weight of the velocity anchor: mean squared gap between the policy's and the initial policy's
    # velocity at one random denoising step of each stored chain. The clipped ratio only sees the
    # stochastic step's velocity; the deployed ODE integrates all K of them (docs/RL.md).
    anchor_coef: float = 0.0
    # What the algorithms optimise: "success" (1 when a chunk reaches success, else 0; ALGORITHMS.md)
    # or "shaped" (robosuite's staged dense reward per step, at most 1, and on success the reward of
    # staying successful until the time limit; turns on env.reward_shaping; robosuite tasks only).
    reward: str = "success"
    # GRPO's advantage scale: "group" (divide by each group's std, ALGORITHMS.md) or "batch" (one std over
    # the batch: groups whose shaped returns barely differ keep small advantages).
    advantage_std: str = "group"
    # GRPO: keep groups whose success rate is in [low, high] (reward=shaped: groups whose returns differ).
    dynamic_sampling: bool = True
    dynamic_sampling_low: float = 0.1
    dynamic_sampling_high: float = 0.9
    # PPO: GAE over decisions, value head.
    gamma: float = 0.99
    gae_lambda: float = 0.95
    value_coef: float = 1.0
    value_hidden: int = 256
    normalize_advantages: bool = True
    # Reproducibility and checkpoints.
    seed: int = 0
    save_every: int = 1
    # Continue from output_dir/checkpoints/last.
    resume: bool = False
    # Stop (checkpointed, resumable) after this many iterations in this invocation; 0 = run to the end.
    stop_after: int = 0
    device: str = "cpu"
    # Torch threads in the learner. 1 by default: the env workers need the other cores, and OpenMP
    # threads competing with them made CPU updates 10x slower on a 2-core machine. 0 lets torch decide.
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.task:
            self.env.task = self.task


@dataclass
class QuickstartConfig:
    output_dir: str = "outputs/quickstart"
    collect: CollectConfig = field(default_factory=CollectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # A short RL phase after SFT (rl.iterations = 0 skips it); its policy and output paths are derived.
    rl: RLConfig = field(default_factory=lambda: RLConfig(iterations=0))


@dataclass
class ServeRosConfig:
    """`vla serve-ros`: run a policy on an arm through ROS 2 (real_robot/ros_serve.py)."""

    # A policy checkpoint directory, or ws://host:port of a `PolicyServer`.
    policy: str = "outputs/quickstart/train/policy"
    robot: str = "configs/robot/panda.yaml"
    # "end_effector_delta" (turned into joints by the arm's kinematics) or "joint".
    action_space: str = "end_effector_delta"
    policy_rate_hz: float = 20.0
    device: str = "cpu"
    domain_id: int | None = None
    # Simulation only: skip the operator's enable step.
    enable_on_start: bool = False
    # SCHED_FIFO priority for the control and callback threads (0: off; needs CAP_SYS_NICE).
    realtime_priority: int = 0


@dataclass
class ServePolicyConfig:
    """`vla serve-policy`: a checkpoint behind a websocket PolicyServer (real_robot/serve_policy.py)."""

    policy: str = "outputs/quickstart/train/policy"
    host: str = "0.0.0.0"
    port: int = 8000
    device: str = "cpu"


@dataclass
class SimArmConfig:
    """`vla sim-arm`: a MuJoCo arm that speaks the robot's ROS 2 topics."""

    robot: str = "configs/robot/panda.yaml"
    task: str = "lift"
    state_rate_hz: float = 100.0
    image_rate_hz: float = 10.0
    domain_id: int | None = None

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

from vla.errors import UserError
from vla.policy.config import PolicyConfig

T = TypeVar("T")

# sim/render.py's IMAGE_CONVENTIONS (not imported: that would load mujoco for every command).
IMAGE_CONVENTIONS = ("rot180", "upright")
# Where `vla collect` starts LIBERO demos (CollectConfig.libero_init_states).
LIBERO_INIT_STATE_SOURCES = ("sampled", "evaluation")


class ConfigError(UserError, ValueError):
    pass


@dataclass
class EnvConfig:
    # Simulated task: lift, stack, pick_place_can, nut_assembly_square, door, or "<LIBERO suite>/<task>".
    task: str = "lift"
    # Cameras rendered into the observations (e.g. agentview, robot0_eye_in_hand).
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    # Side in pixels of the square camera images.
    image_size: int = 64
    # Control steps (actions) after which an episode is truncated.
    max_episode_steps: int = 200
    # Control steps per simulated second (Hz); also the fps of the dataset and the videos.
    control_freq: int = 20
    # robosuite tasks: the staged dense reward instead of the sparse success reward (RL's reward=shaped).
    reward_shaping: bool = False
    # Camera image orientation: "rot180" (LIBERO's published convention), "upright", or "" for the default:
    # the task's own (LIBERO rot180, robosuite upright), or in eval and rl the one the policy was trained on.
    image_convention: str = ""

    def env_kwargs(self) -> dict:
        kwargs = dict(task=self.task, cameras=tuple(self.cameras), image_size=self.image_size,
                      max_episode_steps=self.max_episode_steps, control_freq=self.control_freq)
        if self.reward_shaping:  # only robosuite tasks take it
            kwargs["reward_shaping"] = True
        if self.image_convention:
            kwargs["image_convention"] = self.image_convention
        return kwargs

    def __post_init__(self) -> None:
        if self.image_convention and self.image_convention not in IMAGE_CONVENTIONS:
            raise ValueError(f"env.image_convention: unknown {self.image_convention!r}; valid: "
                             f"{', '.join(IMAGE_CONVENTIONS)} (or empty for the default)")


@dataclass
class DatasetWriteConfig:
    # Store camera streams as mp4 (AV1, as lerobot and most Hub datasets do) instead of PNG frames inside the
    # parquet files: 9x smaller on 64x64 Lift renders, lossy (mean error 2.2 of 255; docs/DECISIONS.md).
    video: bool = False


@dataclass
class CollectConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    # How the LeRobot v3.0 dataset stores its frames.
    dataset: DatasetWriteConfig = field(default_factory=DatasetWriteConfig)
    # Folder the LeRobot v3.0 dataset is written to (its logs go beside it, in <output_dir>.logs).
    output_dir: str = "outputs/demos/lift"
    # Episodes to keep per task (the expert gets at most 3x as many attempts).
    num_episodes: int = 20
    # Demo seeds start here; evaluation uses a disjoint range (EvalConfig.seed).
    seed: int = 0
    # Gaussian noise on the expert's actions, for more varied demonstrations.
    expert_noise: float = 0.0
    # Keep only episodes the expert finished successfully.
    only_successful: bool = True
    # Replace an existing dataset at output_dir (without it, an existing output_dir is refused).
    overwrite: bool = False
    # A LIBERO suite with a scripted expert (libero_spatial, libero_object) to collect instead of env.task.
    # Each selected task gets num_episodes demos (initial states: libero_init_states), under the suite's step
    # limit, with the task's instruction as the dataset task. One dataset in all.
    suite: str = ""
    # Only these task indices of the suite (empty = all).
    task_ids: list[int] = field(default_factory=list)
    # Step limit override for suites (0 = the suite's protocol limit).
    suite_max_steps: int = 0
    # LIBERO: where attempt j starts. "sampled": a fresh placement drawn by LIBERO's own sampler from seed + j,
    # off the evaluation list; "evaluation": the suite's fixed evaluation state (seed + j) mod N (`vla eval`
    # then warns that the policy trained on its test states). Recorded in the dataset (docs/LIBERO.md).
    libero_init_states: str = "sampled"

    def __post_init__(self) -> None:
        if self.libero_init_states not in LIBERO_INIT_STATE_SOURCES:
            raise ValueError(f"libero_init_states: unknown {self.libero_init_states!r}; valid: "
                             f"{', '.join(LIBERO_INIT_STATE_SOURCES)}")


@dataclass
class TrainConfig:
    # LeRobot v3.0 dataset folder to train on (as `vla collect` writes it).
    dataset: str = "outputs/demos/lift"
    # Run folder: config.yaml, tb/ logs, checkpoints/last and the final policy/.
    output_dir: str = "outputs/train/lift"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Optimizer steps (one batch each).
    steps: int = 3000
    # Samples (a frame and its action chunk) per step, drawn at random with replacement.
    batch_size: int = 32
    # Peak AdamW learning rate (linear warmup, then cosine decay to 5% of it).
    lr: float = 3e-4
    # AdamW weight decay.
    weight_decay: float = 1e-4
    # Steps of linear learning-rate warmup before the cosine decay.
    warmup_steps: int = 100
    # Maximum global gradient norm; larger gradients are scaled down to it (0 = no clipping).
    grad_clip: float = 1.0
    # Random image shift in pixels (DrQ-style augmentation; 0 disables).
    image_shift: int = 4
    # Seed for weight init, data order, augmentation and flow-matching noise.
    seed: int = 0
    # Log loss, gradient norm and learning rate to TensorBoard every this many steps.
    log_every: int = 25
    # Write checkpoints/last every this many steps (0 = only the final policy).
    save_every: int = 1000
    # Torch device to train on (cpu, cuda, cuda:1, ...).
    device: str = "cpu"
    # Torch intra-op threads; 0 = half the cores (see resolve_threads).
    num_threads: int = 0
    # Exponential moving average of the weights (diffusers' EMAModel, with warmup); the saved policy is the
    # average. 0 = off; state policies train better with it (0.999 is typical).
    ema_decay: float = 0.0
    # Continue exactly from output_dir/checkpoints/last (weights, optimizer, schedule, data order, RNGs).
    resume: bool = False
    # Replace a non-empty output_dir (without it or resume, a non-empty output_dir is refused).
    overwrite: bool = False


@dataclass
class EvalConfig:
    # Policy checkpoint folder to evaluate (a training run's policy/).
    policy: str = "outputs/train/lift/policy"
    # Results folder: config.yaml, eval_info.json, eval_report.png, videos/ and tb/.
    output_dir: str = "outputs/eval/lift"
    env: EnvConfig = field(default_factory=EnvConfig)
    # Episodes to evaluate (per task when suite is set).
    n_episodes: int = 50
    # Simulated envs run at once (at most n_episodes), in ceil(n_envs / envs_per_worker) worker processes.
    n_envs: int = 2
    # Envs each worker process steps in lock-step: above 1 saves processes and messages where physics is cheap.
    envs_per_worker: int = 1
    # Episode i starts from the initial state of seed + i.
    seed: int = 100_000
    # Save videos of the first this many episodes (per task when suite is set).
    n_videos: int = 3
    # Torch device the policy runs on (cpu, cuda, ...).
    device: str = "cpu"
    # Override the policy's n_action_steps (actions executed per predicted chunk); 0 keeps it.
    n_action_steps: int = 0
    # Torch intra-op threads; 0 = half the cores (see resolve_threads).
    num_threads: int = 0
    # A LIBERO suite (libero_spatial, libero_object, libero_goal, libero_10, libero_90, or a LIBERO-PRO
    # variant) to evaluate instead of env.task. It runs every task of the suite, episode i from the suite's
    # initial state i, under the suite's step limit (docs/ALGORITHMS.md section 6). n_episodes is then per task
    # (protocol: 50).
    suite: str = ""
    # Only these task indices of the suite (empty = all).
    task_ids: list[int] = field(default_factory=list)
    # Step limit override for suites (0 = the suite's protocol limit).
    suite_max_steps: int = 0
    # One policy call per wave of envs instead of per episode: faster, but results then depend on n_envs.
    batched_inference: bool = False
    # Replace a non-empty output_dir (without it, a non-empty output_dir is refused).
    overwrite: bool = False
    # Suites: continue an interrupted evaluation in output_dir; tasks already finished there (tasks/*.json,
    # with their videos) are kept, the rest run. Refused if the earlier run used other settings.
    resume: bool = False


def parse_config(cls: type[T], argv: list[str], command: str = "") -> T:
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
        return draccus.parse(config_class=cls, config_path=config_path, args=argv,
                             prog=f"vla {command}" if command else None)
    except SystemExit as exc:  # argparse exits on unknown flags after printing the reason
        what = f"`vla {command}`" if command else cls.__name__
        raise ConfigError(f"bad command-line arguments {argv} for {what} (see the message above; "
                          f"--help lists the options)") from exc
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
    """Stochastic flow sampling for RL (docs/ALGORITHMS.md section 1)."""

    # "sde" (Flow-SDE) or "noise" (Flow-Noise: learned std, bounded, dropped at deployment);
    # "ode" (the deployed sampler, exploration from the initial noise only) needs surrogate "fpo" or
    # algo "filtered_bc".
    mode: str = "sde"
    # "mixed": one random stochastic denoising step per rollout (pi-RL's default); "joint": every step.
    sde_mode: str = "mixed"
    # Mixed mode draws its stochastic step from the first mixed_steps denoising steps (0 = all of them).
    # Early steps put more of the exploration into the log-prob; on Lift that made RL worse (docs/RL.md).
    mixed_steps: int = 0
    # Flow-SDE noise level a; 0 gives the deterministic Euler ODE.
    noise_level: float = 0.5
    # Flow-Noise: lower bound of the learned std (for a newly created noise head; pi-RL's value).
    noise_std_min: float = 0.08
    # Flow-Noise: upper bound of the learned std (for a newly created noise head; pi-RL's value).
    noise_std_max: float = 0.16


@dataclass
class RLEvalConfig:
    # Episodes of the final deterministic (ODE) evaluation of the deployed policy; 0 skips it.
    n_episodes: int = 50
    # Episode i starts from the initial state of seed + i (disjoint from training seeds).
    seed: int = 100_000
    # Save videos of the first this many episodes of the final evaluation (in eval/videos).
    n_videos: int = 0
    # Also evaluate every this many iterations (n_episodes_periodic episodes each); 0 = only at the end.
    every: int = 0
    # Episodes of each periodic evaluation (see every).
    n_episodes_periodic: int = 20


@dataclass
class OffPolicyConfig:
    """`vla rl --algo noise|residual|zprl`: SAC (stable-baselines3) steering a frozen policy."""

    # Environment steps to train for, warm-up included (give every arm of a comparison the same).
    env_steps: int = 50_000
    # Steering size (0 = the space's default): the noise bound b (noise, default 1.5), the residual's
    # lambda_a in action units (residual, default 0.2), the latent lambda (zprl, default 0.2).
    scale: float = 0.0
    # Environment steps of warm-up with steering off (the base policy acts) before SAC updates start.
    warmup_steps: int = 2000
    # Replay buffer size in decisions (one decision = one action chunk).
    buffer_size: int = 200_000
    # Transitions per gradient step.
    batch_size: int = 256
    # Gradient steps per decision (update-to-data ratio).
    utd: int = 8
    # Adam learning rate of the actor, the critics and the entropy coefficient.
    lr: float = 3e-4
    # Polyak averaging rate of the target critics.
    tau: float = 0.005
    # Critics (2 = SAC's clipped double Q; ZPRL uses an ensemble of 10).
    n_critics: int = 2
    # Critics drawn at random per update whose minimum is the TD target, the actor then maximising the
    # ensemble's mean (REDQ; ZPRL: 2 of 10); 0 = the minimum over all critics for both (SB3's SAC).
    target_subset: int = 0
    # Keep SAC's entropy bonus in the TD target (ZPRL's released code leaves it out).
    entropy_in_target: bool = True
    # Hidden layer widths of the actor and of each critic.
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    # Initial entropy coefficient (auto-tuned from there).
    ent_coef_init: float = 0.01
    # Target entropy per steering dimension (auto-tuning aims at target_entropy * dim); -1 is SAC's default.
    target_entropy: float = -1.0
    # Initial log standard deviation of the actor's Gaussian (before tanh), the same in every state: a
    # low value starts exploration close to the base policy instead of SAC's std of about 1.
    init_log_std: float = -3.0
    # Start the actor's mean at zero steering (its output layer zeroed): the base policy's own chunk for residual
    # and zprl, the ODE from x_0 = 0 for noise. False keeps SAC's random output layer, whose mean steering is
    # state-dependent from the first update (it took the pixel VLA from 48% to 5% in the residual space).
    zero_init_actor: bool = True
    # Evaluate the deterministic actor on eval.n_episodes_periodic fixed states every this many env steps (0 = never).
    eval_every: int = 10_000
    # Checkpoint to checkpoints/last (learner, replay buffer, RNGs: `--resume=true` continues exactly) at the
    # first episode end after every this many env steps; 0 = only when stop_after stops the run.
    save_every: int = 10_000
    # Stop (checkpointed, resumable) at the first episode end after this many env steps in this invocation;
    # 0 = run to offpolicy.env_steps.
    stop_after: int = 0


@dataclass
class SRPOConfig:
    """`vla rl --algo srpo`: the progress reward from a world-model encoder (docs/ALGORITHMS.md section 3)."""

    # World-model encoder that embeds each trajectory's video: "policy_vision" (a frozen copy of the
    # policy's own vision encoder; needs a policy with a camera), "video" (a small video encoder trained by
    # `vla train-world-model`, at encoder_path) or "vjepa2" (V-JEPA 2 through transformers, from the local
    # folder encoder_path).
    encoder: str = "policy_vision"
    # The "video" encoder's .safetensors file, or the "vjepa2" model folder (config.json + weights).
    encoder_path: str = ""
    # Frames sampled uniformly across each episode's chunk-boundary frames (short videos repeat theirs
    # cyclically). The paper used 64; V-JEPA 2 needs a multiple of its tubelet size (2).
    n_frames: int = 16
    # Camera whose frames are embedded ("" = the policy's first camera, agentview for a state policy).
    # Rendered only at chunk boundaries; a state policy's env renders it only for SRPO.
    camera: str = ""
    # Embedding size the encoder must produce (0 = whatever it produces); a mismatch is reported and the
    # batch falls back to binary rewards.
    embedding_dim: int = 0
    # Failure reward: "released" (0.6 * sigmoid(10 * (0.5 - n)) of the min-max normalised distance, the
    # released code's) or "paper" (the normal CDF of the standardised distance, decreasing).
    reward_formula: str = "released"
    # DBSCAN's eps on the standardised success embeddings.
    dbscan_eps: float = 0.5
    # DBSCAN's min_samples (a point and its neighbours within eps that make a cluster core).
    dbscan_min_samples: int = 2
    # Log the Spearman correlation between the progress reward and the simulator's staged dense reward of
    # the same trajectories (robosuite tasks; turns on env.reward_shaping, which the update never reads).
    dense_correlation: bool = True
    # Trajectories per encoder call (bounds the encoder's memory).
    encode_batch: int = 8


@dataclass
class LapoConfig:
    """`vla rl --algo lapo`: latent reasoning, its length and the actions optimised together (docs/ALGORITHMS.md
    section 5); the clip range, GAE and value loss are the run's (clip_low, clip_high, gamma, gae_lambda, value_coef)."""

    # sigma of the latent ratio r_z = exp(-sum_{i <= L} ||z_old_i - z_i||^2 / (2 sigma^2)) (released: 10).
    latent_sigma: float = 10.0
    # Weight of the latent term beside the action and length terms (released: 0.1).
    latent_coef: float = 0.1


@dataclass
class RLConfig:
    """`vla rl`: RL post-training of a flow policy in simulation: on-policy (GRPO, PPO) on its weights,
    or off-policy steering of the frozen policy (noise, residual, zprl; see `offpolicy`).

    Sized so one Lift iteration takes about a minute on 2 CPU cores."""

    # "grpo" or "ppo" (on-policy, train the policy), "srpo" (GRPO with a world-model progress reward,
    # see srpo), "lapo" (PPO on a latent-reasoning policy's thinking, its length and its actions, see
    # lapo), "filtered_bc" (imitate the policy's own successes, docs/RL.md), or "noise", "residual",
    # "zprl" (steer it, frozen).
    algo: str = "grpo"
    # Supervised policy checkpoint to start from (also the KL reference).
    policy: str = "outputs/quickstart/train/policy"
    # Run folder: checkpoints/last, the final policy/, eval/, history.json, success.png and tb/.
    output_dir: str = "outputs/rl/lift"
    # Shorthand for env.task (`vla rl --task lift`).
    task: str | None = None
    env: EnvConfig = field(default_factory=EnvConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: RLEvalConfig = field(default_factory=RLEvalConfig)
    offpolicy: OffPolicyConfig = field(default_factory=OffPolicyConfig)
    lapo: LapoConfig = field(default_factory=LapoConfig)
    srpo: SRPOConfig = field(default_factory=SRPOConfig)
    # RL iterations, each one round of rollouts followed by one update.
    iterations: int = 30
    # Rollouts per iteration = n_groups * group_size; a group shares its initial state.
    n_groups: int = 4
    # Rollouts per group, all from the group's initial state (GRPO needs at least 2).
    group_size: int = 4
    # Rollouts run at once (one env each), in ceil(n_envs / envs_per_worker) worker processes.
    n_envs: int = 4
    # Envs each worker process steps in lock-step: above 1 saves processes and messages where physics is cheap.
    envs_per_worker: int = 1
    # Where the env workers run: "local" (processes on this machine) or "ray" (Ray actors on a local Ray
    # instance or a cluster, docs/SCALING.md); the same seed gives the same run on either.
    backend: str = "local"
    # backend=ray: unset starts a local Ray instance; "auto" joins the cluster `ray start` runs on this
    # machine; host:port joins that head node.
    ray_address: str | None = None
    # backend=ray: CPUs Ray reserves for each env worker when it places it.
    ray_cpus_per_worker: float = 1.0
    # backend=ray: Ray's placement of the env workers: "DEFAULT" (packed) or "SPREAD" (over the nodes).
    ray_scheduling: str = "DEFAULT"
    # backend=ray: custom Ray resources each env worker needs, "name=amount,...": only nodes started with
    # them (`ray start --resources='{"sim": 8}'`) then take workers (docs/SCALING.md).
    ray_resources: str = ""
    # backend=ray: how often Ray may restart one env worker (crashed, or killed when hung) before the run stops.
    ray_max_restarts: int = 10
    # backend=ray: where the rollouts' policy runs. "driver": in the `vla rl` process, one batched call for all
    # envs (the actors only step envs; same run as the local backend). "worker": every Ray actor holds a copy
    # of the policy on its node's device (CUDA if it sees one) and samples its own envs' decisions; the
    # weights are pushed to the actors after each update (docs/SCALING.md).
    ray_inference: str = "driver"
    # backend=ray: GPUs Ray reserves for each worker when it places it (fractions share a GPU), e.g. 0.25
    # for four rollout workers per GPU with --ray_inference worker; 0 reserves none.
    ray_gpus_per_worker: float = 0.0
    # Episodes of a lost (crashed or hung) env worker: "drop" them (never counted as failures) or, with
    # backend=ray, "replay" them on the restarted worker from their seed and actions (the run goes on
    # as if nothing happened).
    lost_episodes: str = "drop"
    # Most learner updates allowed between the weights that collected a trajectory and the update that
    # learns from it (logged as staleness_max; on-policy algorithms always have 0).
    max_staleness: int = 0
    # Group g of iteration i resets from train_seed + i * n_groups + g (disjoint from eval seeds).
    train_seed: int = 1_000_000
    # Freeze the vision tower during RL (by default RL trains every policy weight).
    freeze_vision: bool = False
    # Train only the action expert: the whole VLM side, vision included, stays the SFT one.
    train_expert_only: bool = False
    # AdamW learning rate of the policy's trained weights.
    lr: float = 1e-5
    # Learning rate of the Flow-Noise std head (sampling.mode=noise).
    noise_head_lr: float = 1e-4
    # Learning rate of PPO's value head.
    value_lr: float = 1e-4
    # AdamW weight decay, for the policy and the heads.
    weight_decay: float = 0.0
    # "constant" or "cosine" (per iteration, after warmup_iterations of linear warmup).
    schedule: str = "constant"
    # Iterations of linear learning-rate warmup (0 = none).
    warmup_iterations: int = 0
    # Clip the global gradient norm of all trained weights to this (0 = no clipping).
    grad_clip: float = 1.0
    # Passes over each iteration's rollouts, reshuffled each time (target_kl may stop them early).
    epochs: int = 2
    # Decisions (chunk boundaries) per forward/backward pass.
    minibatch_size: int = 64
    # Minibatches per optimizer step (their mean gradient): the memory of one minibatch, the noise of several.
    grad_accumulation: int = 1
    # Policy loss: ratio clipped to [1 - clip_low, 1 + clip_high]; dual_clip > 1 enables dual clip (0 = off).
    clip_low: float = 0.2
    # Upper ratio clip: the policy loss clips the ratio at 1 + clip_high (clip-higher).
    clip_high: float = 0.28
    # Dual clip: cap the loss of negative-advantage decisions at -dual_clip * A (must be > 1; 0 = off).
    dual_clip: float = 0.0
    # What one PPO ratio covers: "chunk" (a decision: log-prob summed over the executed rows and action
    # dims, docs/ALGORITHMS.md's default) or "action" (one executed action row; its decision's advantage).
    # Per-row ratios are clipped one by one, so a policy step may move each row as far as "chunk"
    # lets the whole decision move (see docs/RL.md).
    logprob_level: str = "chunk"
    # What stands in the ratio for log pi(action): "logprob" (the sampled chain's exact log-prob) or "fpo".
    # The "logprob" surrogate is the Flow-SDE / Flow-Noise log-prob of docs/ALGORITHMS.md section 1. With "fpo"
    # (Flow Policy Optimization) it is minus the executed chunk's flow-matching loss at fpo_samples fixed
    # (t, eps) pairs; that works with any sampling mode, "ode" included, and credits all of an action's
    # randomness, not only the stochastic step's (docs/RL.md).
    surrogate: str = "logprob"
    # With surrogate=fpo: fixed (t, eps) pairs at which each executed chunk's flow-matching loss is scored.
    fpo_samples: int = 4
    # Project the reward-blind direction out of each minibatch's policy gradient (docs/RL.md).
    # That direction is the gradient of the minibatch's mean (surrogate) log-prob, "make what the policy
    # did more likely", which FPO's surrogate adds whenever a minibatch's advantages do not cancel
    # (vla/rl/update.py).
    project_out_blind: bool = False
    # Stop an update's epochs once a minibatch's approximate KL to the rollout policy exceeds this (0 = off).
    target_kl: float = 0.0
    # Weight of the k3 KL to the initial policy (0 = no reference policy is kept).
    kl_coef: float = 0.0
    # Weight of the velocity anchor: mean squared gap between the policy's and the initial policy's
    # velocity at one random denoising step of each stored chain. The clipped ratio only sees the
    # stochastic step's velocity; the deployed ODE integrates all K of them (docs/RL.md).
    anchor_coef: float = 0.0
    # What the algorithms optimise: "success" (1 when a chunk reaches success, else 0) or "shaped";
    # the steering algorithms also take "time" (0 on success, else -1 per decision).
    # The success reward is docs/ALGORITHMS.md's. The shaped one (robosuite tasks only; turns on
    # env.reward_shaping) is robosuite's staged dense reward per step, at most 1, and on success the
    # reward of staying successful until the time limit.
    reward: str = "success"
    # GRPO's advantage scale: "group" (divide by each group's std, docs/ALGORITHMS.md) or "batch" (one std over
    # the batch: groups whose shaped returns barely differ keep small advantages).
    advantage_std: str = "group"
    # GRPO: keep groups whose success rate is in [low, high] (reward=shaped: groups whose returns differ).
    dynamic_sampling: bool = True
    # GRPO dynamic sampling: lowest group success rate kept (reward=success only).
    dynamic_sampling_low: float = 0.1
    # GRPO dynamic sampling: highest group success rate kept (reward=success only).
    dynamic_sampling_high: float = 0.9
    # filtered_bc: a LeRobot dataset (the SFT demos) whose frames join every minibatch, as many as its
    # own examples ("" = none); they keep the policy on what it was taught.
    demos: str = ""
    # filtered_bc: weight of the demo frames' flow-matching loss beside the successes' loss.
    demo_weight: float = 1.0
    # filtered_bc: keep the successful decisions of earlier iterations too, the newest this many, and
    # train on draws from all of them (0 = this iteration's only). Saved in the checkpoint; mind the
    # memory with images (a 224 px decision is 150 kB).
    success_buffer: int = 0
    # PPO: discount per decision (chunk) in GAE; decisions, not env steps, are GAE's time steps.
    gamma: float = 0.99
    # PPO: GAE's lambda (1 = Monte-Carlo returns, 0 = one-step TD).
    gae_lambda: float = 0.95
    # PPO: weight of the value loss (0.5 * MSE to the GAE returns) in the total loss.
    value_coef: float = 1.0
    # PPO: hidden width of a newly created value head (an MLP; a loaded head keeps its own).
    value_hidden: int = 256
    # PPO: normalise the advantages to zero mean and unit std over the batch.
    normalize_advantages: bool = True
    # Seed for new heads' weights, sampling noise and minibatch order (initial states: train_seed).
    seed: int = 0
    # Checkpoint to checkpoints/last every this many iterations (0 = only at the end or stop_after).
    save_every: int = 1
    # Continue from output_dir/checkpoints/last.
    resume: bool = False
    # Replace a non-empty output_dir (without it or resume, a non-empty output_dir is refused).
    overwrite: bool = False
    # Stop (checkpointed, resumable) after this many iterations in this invocation; 0 = run to the end.
    stop_after: int = 0
    # Torch device of the learner and the rollout policy (cpu, cuda, ...); env workers stay on the CPU.
    device: str = "cpu"
    # Under torchrun: shard the learner's policy, heads, gradients and AdamW states over the processes with
    # PyTorch FSDP2 (one unit per transformer block), for policies whose replica per process does not fit
    # (pi0-size). Off: every process holds the whole policy and the gradients are summed (docs/SCALING.md).
    fsdp: bool = False
    # Torch intra-op threads in the learner; 0 = half the cores (see resolve_threads). One by default:
    # the env workers need the other cores, and OpenMP threads competing with them made CPU updates 10x
    # slower on a 2-core machine.
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.task:
            self.env.task = self.task


@dataclass
class WorldModelConfig:
    """`vla train-world-model`: SRPO's small video encoder, trained self-supervised (temporal-contrastive)."""

    # LeRobot datasets with camera frames (demos from `vla collect`, recorded rollouts); episodes of all.
    datasets: list[str] = field(default_factory=list)
    # Camera whose frames it learns from (the dataset feature observation.images.<camera>).
    camera: str = "agentview"
    # The encoder's .safetensors file (SRPO loads it with --srpo.encoder=video --srpo.encoder_path=...).
    output: str = "outputs/world_model/encoder.safetensors"
    # Side of the square frames it sees (frames are resized to it).
    image_size: int = 64
    # Embedding size (the width of its tokens).
    width: int = 64
    # Frames per training clip, taken every frame_stride frames of an episode.
    clip_frames: int = 8
    # Dataset frames between a clip's frames.
    frame_stride: int = 4
    # A positive pair: two clips of the same episode at most this many dataset frames apart.
    max_offset: int = 6
    # Optimizer steps (one batch of clip pairs each).
    steps: int = 1500
    # Clip pairs per step; the other pairs of the batch are each clip's negatives.
    batch_size: int = 32
    # AdamW learning rate.
    lr: float = 3e-4
    # InfoNCE temperature on cosine similarities.
    temperature: float = 0.1
    # Random image shift in pixels (augmentation, as in SFT; 0 disables).
    image_shift: int = 4
    # Seed of the weights and of the clip draws.
    seed: int = 0
    # Torch intra-op threads; 0 = half the cores.
    num_threads: int = 0
    # Torch device (cpu, cuda, ...).
    device: str = "cpu"
    # Replace an existing output file.
    overwrite: bool = False


@dataclass
class QuickstartConfig:
    # Everything goes under it: demos/, train/, eval/ (and rl/); the stages' own output paths are derived.
    output_dir: str = "outputs/quickstart"
    # Replace a non-empty output_dir (without it, a non-empty output_dir is refused).
    overwrite: bool = False
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
    # Robot config YAML: joints and their limits, workspace, control rate, cameras, topics.
    robot: str = "configs/robot/panda.yaml"
    # "end_effector_delta" (turned into joints by the arm's kinematics) or "joint".
    action_space: str = "end_effector_delta"
    # Action rows per second in the policy's chunks; match the training env's control_freq.
    policy_rate_hz: float = 20.0
    # Torch device for a local checkpoint (unused with a ws:// policy server).
    device: str = "cpu"
    # ROS_DOMAIN_ID to use, 0-232 (unset: the environment's).
    domain_id: int | None = None
    # Simulation only: skip the operator's enable step.
    enable_on_start: bool = False
    # SCHED_FIFO priority for the control and callback threads (0: off; needs CAP_SYS_NICE).
    realtime_priority: int = 0
    # Run a local checkpoint in a child process (a loopback policy server) instead of the node's
    # inference thread: its Python work then never holds the control loop's GIL (halved the p99
    # jitter with the tiny VLA on a loaded 2-core machine, BENCHMARKS.md).
    inference_process: bool = False
    # Simulation (Gazebo, Isaac): take time from /clock, so inputs stamped in simulated time are fresh.
    use_sim_time: bool = False


@dataclass
class ServePolicyConfig:
    """`vla serve-policy`: a checkpoint behind a websocket PolicyServer (real_robot/serve_policy.py)."""

    # Policy checkpoint folder to serve.
    policy: str = "outputs/quickstart/train/policy"
    # Address to listen on (0.0.0.0 = every interface).
    host: str = "0.0.0.0"
    # TCP port of the websocket server.
    port: int = 8000
    # Torch device the policy runs on (cpu, cuda, ...).
    device: str = "cpu"


@dataclass
class ExportConfig:
    """`vla export`: a policy checkpoint written in another project's format (vla/export.py)."""

    # Policy checkpoint folder to export (any checkpoint `vla eval` loads).
    policy: str = ""
    # Target format: "lerobot" (lerobot 0.4.x: flow_vla -> pi0 / pi05, flow_vla_smolvla -> smolvla).
    format: str = "lerobot"
    # Folder to write; refused if it exists, unless overwrite.
    output: str = ""
    # Replace an existing output folder.
    overwrite: bool = False
    # Write model sizes lerobot's stock configs do not build (tiny test models; a lerobot with patched sizes).
    custom_sizes: bool = False

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise ValueError(f"format: unknown {self.format!r}; valid: {', '.join(EXPORT_FORMATS)}")
        for key in ("policy", "output"):
            if not getattr(self, key):
                raise ValueError(f"--{key} is required (a checkpoint folder)")


EXPORT_FORMATS = ("lerobot",)


@dataclass
class SimArmConfig:
    """`vla sim-arm`: a MuJoCo arm that speaks the robot's ROS 2 topics."""

    # Robot config YAML whose joints, cameras and topics the simulated arm serves.
    robot: str = "configs/robot/panda.yaml"
    # robosuite task whose scene is simulated (lift, stack, pick_place_can, nut_assembly_square, door).
    task: str = "lift"
    # JointState publishing rate in Hz.
    state_rate_hz: float = 100.0
    # Image publishing rate in Hz, for each configured camera.
    image_rate_hz: float = 10.0
    # ROS_DOMAIN_ID to use, 0-232 (unset: the environment's).
    domain_id: int | None = None


@dataclass
class RosBringupConfig:
    """`vla ros-bringup`: `vla sim-arm` and `vla serve-ros` together, supervised (real_robot/bringup.py)."""

    # Robot config YAML for both processes (leave arm.robot and node.robot unset).
    robot: str = "configs/robot/panda.yaml"
    # ROS_DOMAIN_ID for both, 0-232 (unset: the environment's; leave arm.domain_id and node.domain_id unset).
    domain_id: int | None = None
    # Seconds each process may take to stop after Ctrl-C/SIGTERM before it is killed.
    stop_timeout_s: float = 20.0
    # The simulated arm (`vla sim-arm --help`).
    arm: SimArmConfig = field(default_factory=SimArmConfig)
    # The policy node (`vla serve-ros --help`).
    node: ServeRosConfig = field(default_factory=ServeRosConfig)

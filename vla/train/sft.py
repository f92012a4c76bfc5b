"""Supervised flow-matching training of a policy (the VLA or the state policy) on a LeRobot dataset.

One loop, top to bottom: load and validate the dataset (before any compute),
size the policy from its features, normalise with its stats, then AdamW with
warmup and cosine decay, gradient clipping, TensorBoard scalars, a progress
bar, and checkpoints written atomically.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import default_collate
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from vla.atomic_io import write_json_atomic
from vla.config import ConfigError, TrainConfig, resolve_threads, write_resolved_config
from vla.policy.checkpoint import CheckpointError
from vla.policy.finetune import apply_finetune_options
from vla.policy.flow_matching_policy import ENV_STATE_KEY, IMAGE_PREFIX
from vla.policy.flow_vla import FlowVLAPolicy
from vla.policy.registry import load_policy
from vla.run_dir import claim_output_dir, removed_on_user_error
from vla.train.augment import random_shift
from vla.train.checkpoint import POLICY_DIR, read_training_state, restore_training_state, save_training_checkpoint


EMA_FILE = "ema.safetensors"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_with_warmup(step: int, warmup: int, total: int, floor: float = 0.05) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def policy_for_dataset(cfg: TrainConfig, dataset):
    """Take state/action sizes, camera names and the data's provenance from the data, not from the user."""
    convention, eval_states = data_provenance(cfg.policy, dataset)
    policy = _build_policy_for_dataset(cfg, dataset)
    for c in (cfg.policy, policy.config):  # the run's resolved config and the saved checkpoint's
        c.image_convention, c.train_eval_init_states = convention, eval_states
    return policy


def data_provenance(pcfg, dataset) -> tuple[str, list[str] | None]:
    """(image convention, LIBERO tasks whose evaluation states started demos or None if unrecorded).

    The image convention is the dataset's (`vla collect` records it); a dataset that does not record one
    keeps policy.image_convention, the user's declaration, or "" (unknown). The two must not disagree."""
    provenance = dataset.provenance
    recorded = provenance.get("image_convention", "")
    if not dataset.camera_keys:
        recorded = ""  # no images, nothing oriented
    if recorded and pcfg.image_convention and recorded != pcfg.image_convention:
        raise ConfigError(f"policy.image_convention={pcfg.image_convention!r}, but dataset {dataset.root} records "
                          f"its images as {recorded!r}: drop the flag (the dataset's is used)")
    if "init_states" not in provenance:  # not recorded (a dataset from before, or from elsewhere)
        return recorded or pcfg.image_convention, None
    eval_states = provenance.get("evaluation_init_state_tasks", [])
    if not isinstance(eval_states, list) or not all(isinstance(t, str) for t in eval_states):
        raise ConfigError(f"dataset {dataset.root}: meta/info.json's evaluation_init_state_tasks must be a list of "
                          f"task names, got {eval_states!r}")
    return recorded or pcfg.image_convention, list(eval_states)


def _build_policy_for_dataset(cfg: TrainConfig, dataset):
    pcfg = cfg.policy
    pcfg.state_dim = int(dataset.features["observation.state"]["shape"][0])
    pcfg.action_dim = int(dataset.features["action"]["shape"][0])
    if pcfg.type == "state_flow":
        return _state_policy_for_dataset(pcfg, dataset)
    cameras = [k[len(IMAGE_PREFIX):] for k in dataset.camera_keys]
    missing = [c for c in pcfg.cameras if c not in cameras]
    if missing:
        raise ValueError(f"policy.cameras {pcfg.cameras}: {missing} not in the dataset (it has {cameras})")
    pcfg.validate()
    if pcfg.init and pcfg.vib_dim:  # a bottleneck added to a trained VLA, which stays frozen
        return _add_bottleneck(pcfg)
    if pcfg.init:
        return init_for_dataset(pcfg, dataset.stats, cameras)
    policy = FlowVLAPolicy(pcfg)
    policy.normalizer.load_stats(dataset.stats)
    apply_finetune_options(policy)
    return policy


def init_for_dataset(pcfg, dataset_stats: dict, dataset_cameras: list[str]):
    """`vla train --policy.init=PATH`: the checkpoint's architecture and weights, the dataset's
    dims and normalisation stats, the fine-tuning options of pcfg."""
    from vla.policy.flow_vla.policy import policy_normalizer

    policy = load_policy(pcfg.init, tokenizer_path=pcfg.tokenizer_path)
    c = policy.config
    missing = [cam for cam in c.cameras if cam not in dataset_cameras and not cam.startswith("empty_camera_")]
    if missing:
        raise CheckpointError(f"{pcfg.init}: the checkpoint's cameras {c.cameras} are not all in the dataset "
                              f"(missing {missing}; the dataset has {dataset_cameras})")
    if pcfg.state_dim > c.model_state_dim or pcfg.action_dim > c.model_action_dim:
        raise CheckpointError(f"{pcfg.init}: dataset state / action dims ({pcfg.state_dim}, {pcfg.action_dim}) exceed "
                              f"the checkpoint's ({c.model_state_dim}, {c.model_action_dim})")
    c.max_state_dim, c.max_action_dim = c.model_state_dim, c.model_action_dim
    c.state_dim, c.action_dim = pcfg.state_dim, pcfg.action_dim
    for key in ("freeze_vision", "train_expert_only", "gradient_checkpointing", "dtype", "lora_rank", "lora_alpha"):
        setattr(c, key, getattr(pcfg, key))
    c.init = pcfg.init
    # Fine-tuning normalises with the new data's statistics, as lerobot does.
    policy.normalizer = policy_normalizer(c)
    if c.prompt_format == "pi05":  # pi0.5 normalises with the 1st / 99th percentiles
        dataset_stats = {k: {**v, "min": v.get("q01", v["min"]), "max": v.get("q99", v["max"])}
                         for k, v in dataset_stats.items()}
    policy.normalizer.load_stats(dataset_stats)
    pcfg.__dict__.update(c.__dict__)  # the run's resolved config records what was built
    counts = apply_finetune_options(policy)
    print(f"initialised from {pcfg.init}: {counts['trainable'] / 1e6:.2f}M trainable, "
          f"{counts['frozen'] / 1e6:.2f}M frozen parameters")
    return policy


def _batches(dataset, cfg: TrainConfig, generator: torch.Generator, start_step: int):
    """Batch `step` for step in [start_step, steps): indices drawn with replacement from `generator`,
    so restoring the generator's state resumes the data order exactly."""
    for step in range(start_step, cfg.steps):
        indices = torch.randint(len(dataset), (cfg.batch_size,), generator=generator).tolist()
        yield step, default_collate([dataset[i] for i in indices])


def _future_targets(cfg: TrainConfig) -> dict:
    """The frames ahead whose observations the batches carry (latent reasoning's warm-up targets: the state
    policy's low-dimensional state, the VLA's first camera), else none."""
    pcfg = cfg.policy
    if not pcfg.latent_reasoning:
        return {}
    from vla.policy.latent_reasoning import latent_target_offsets

    keys = ["observation.state", ENV_STATE_KEY] if pcfg.type == "state_flow" else [IMAGE_PREFIX + pcfg.cameras[0]]
    return {"future_offsets": latent_target_offsets(pcfg), "future_keys": keys}


def _timed(batches, waited: dict):
    """The batches, with the seconds spent waiting for each added to waited["s"]: how long training
    waited on data (decoding, collation) rather than computing."""
    while True:
        start = time.perf_counter()
        try:
            item = next(batches)
        except StopIteration:
            return
        waited["s"] += time.perf_counter() - start
        yield item


def _state_policy_for_dataset(pcfg, dataset):
    from vla.policy.state_flow import StateFlowPolicy

    if pcfg.init:
        return _add_bottleneck(pcfg)
    env_state = dataset.features.get(ENV_STATE_KEY)
    if env_state is None:
        raise ConfigError(f"dataset {dataset.root} has no {ENV_STATE_KEY!r} (the task's object state), which a "
                          "state_flow policy reads: collect it again with `vla collect` on a robosuite task")
    pcfg.environment_state_dim = int(env_state["shape"][0])
    policy = StateFlowPolicy(pcfg)
    policy.normalizer.load_stats(dataset.stats)
    return policy


def _add_bottleneck(pcfg):
    """`--policy.init=<state_flow or flow_vla checkpoint> --policy.vib_dim=N`: the checkpoint's policy, frozen
    (its weights and normalisation stats), with a new bottleneck that alone trains (ZPRL's offline phase)."""
    base = load_policy(pcfg.init, tokenizer_path=pcfg.tokenizer_path) if pcfg.type == "flow_vla" else load_policy(pcfg.init)
    if base.checkpoint_type != pcfg.type or not pcfg.vib_dim or getattr(base, "vib", "none") is not None:
        raise ConfigError(f"policy.init={pcfg.init}: a {pcfg.type} policy with policy.vib_dim > 0 initialises only "
                          f"from a {pcfg.type} checkpoint without a bottleneck, to add one")
    config = base.config
    config.vib_dim, config.vib_beta, config.vib_gamma, config.init = pcfg.vib_dim, pcfg.vib_beta, pcfg.vib_gamma, pcfg.init
    policy = type(base)(config)
    missing, unexpected = policy.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("vib.") for k in missing), (missing, unexpected)
    policy.requires_grad_(False)
    policy.vib.requires_grad_(True)
    pcfg.__dict__.update(config.__dict__)  # the run's resolved config records what was built
    print(f"initialised from {pcfg.init}: only the bottleneck trains "
          f"({sum(p.numel() for p in policy.vib.parameters()) / 1e6:.2f}M parameters)")
    return policy


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    from vla.data import LeRobotDataset  # pyarrow lives in the [train] extra

    out = Path(cfg.output_dir)
    last = out / "checkpoints" / "last"
    for name in ("steps", "batch_size", "log_every"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name}={getattr(cfg, name)}: must be at least 1")
    if cfg.resume:
        if not last.is_dir():
            raise ConfigError(f"--resume=true but {last} does not exist: nothing to resume")
        if cfg.policy.lora_rank:
            raise ConfigError("--resume=true with policy.lora_rank > 0: checkpoints hold merged LoRA weights, "
                              "so training cannot continue exactly; restart without --resume")
    else:
        claim_output_dir(out, cfg.overwrite, resumable=True)
    resolve_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    if cfg.policy.init:  # the chunk length is the checkpoint's: the dataset must cut chunks to match
        from vla.policy.foreign.pretrained import checkpoint_chunking

        cfg.policy.chunk_size, cfg.policy.n_action_steps = checkpoint_chunking(cfg.policy.init)
    with removed_on_user_error(out):
        targets = _future_targets(cfg)
        dataset = LeRobotDataset(cfg.dataset, action_horizon=cfg.policy.chunk_size, **targets)
        policy = policy_for_dataset(cfg, dataset).to(cfg.device).train()
        if _future_targets(cfg) != targets:  # --policy.init: the checkpoint's latent reasoning decides the targets
            dataset.close()
            dataset = LeRobotDataset(cfg.dataset, action_horizon=cfg.policy.chunk_size, **_future_targets(cfg))
    generator = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, cfg.warmup_steps, cfg.steps))
    ema = make_ema(params, cfg.ema_decay)
    start_step, history = 0, []
    if cfg.resume:
        start_step, history = _resume(cfg, last, policy, optimizer, scheduler, generator, ema)
    write_resolved_config(cfg, out)
    n_params = sum(p.numel() for p in params)
    kind = f"state_flow ({cfg.policy.backbone})" if cfg.policy.type == "state_flow" else cfg.policy.preset
    print(f"training {kind} policy ({n_params / 1e6:.2f}M trainable parameters) on "
          f"{dataset.num_episodes} episodes / {dataset.num_frames} frames from {cfg.dataset}"
          + (f", resuming at step {start_step}" if start_step else ""))

    writer = SummaryWriter(str(out / "tb"), purge_step=start_step or None)
    camera_keys = [IMAGE_PREFIX + c for c in cfg.policy.cameras]
    start = time.time()
    waited = {"s": 0.0}
    bar = tqdm(total=cfg.steps, initial=start_step, desc="train", disable=not progress, dynamic_ncols=True)
    try:
        for step, batch in _timed(_batches(dataset, cfg, generator, start_step), waited):
            for key in camera_keys:
                batch[key] = random_shift(batch[key], cfg.image_shift, generator)
            loss, info = policy(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at step {step}; last checkpoint kept at {last}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip or float("inf"))
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.step(params)
            history.append(info["loss"])
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                for name, value in info.items():  # the loss, and its terms where a policy reports them
                    writer.add_scalar(f"train/{name}", value, step)
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                bar.set_postfix(loss=f"{np.mean(history[-cfg.log_every:]):.4f}")
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                writer.flush()
                save_training_checkpoint(last, policy, optimizer, scheduler, generator, step + 1, history,
                                         extra={"run": _run_identity(cfg), **ema_extra(ema)},
                                         write_beside_policy=lambda d: save_ema(ema, d))
    finally:  # the bar and the event file close before an interrupt's message is printed
        bar.close()
        writer.close()
    elapsed = time.time() - start
    final = out / "policy"
    if ema is not None:  # the deployed policy is the average
        ema.copy_to(params)
    policy.save_pretrained(final)
    trained = cfg.steps - start_step
    summary = {"steps": cfg.steps, "resumed_at_step": start_step, "batch_size": cfg.batch_size, "seconds": elapsed,
               "samples_per_second": trained * cfg.batch_size / max(elapsed, 1e-9),
               "data_wait_seconds": waited["s"],  # of `seconds`: the loop waiting for batches
               "final_loss_avg_last_100": float(np.mean(history[-100:]))}
    write_json_atomic(out / "train_summary.json", summary)
    print(f"trained {trained} steps in {elapsed:.0f} s ({summary['samples_per_second']:.0f} samples/s), "
          f"final loss {summary['final_loss_avg_last_100']:.4f}")
    print(f"policy written to {final}; TensorBoard logs in {out / 'tb'}")
    return final


def _run_identity(cfg: TrainConfig) -> dict:
    """What must not change between a run and its resumption (steps may grow)."""
    return {"dataset": str(Path(cfg.dataset).resolve()), "batch_size": cfg.batch_size, "seed": cfg.seed,
            "lr": cfg.lr, "warmup_steps": cfg.warmup_steps, "preset": cfg.policy.preset, "type": cfg.policy.type,
            "ema_decay": cfg.ema_decay}


def make_ema(params: list[torch.nn.Parameter], decay: float):
    """diffusers' EMAModel over the trainable weights (decay warmup as in diffusion policy), or None."""
    if decay <= 0:
        return None
    if decay >= 1:
        raise ConfigError(f"--ema_decay={decay}: must be below 1 (0 turns the average off)")
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=decay, use_ema_warmup=True, power=0.75)


def ema_extra(ema) -> dict:
    return {} if ema is None else {"ema_optimization_step": int(ema.optimization_step)}


def save_ema(ema, policy_dir: Path) -> None:
    if ema is not None:  # beside the (raw) checkpoint weights: a resumed run continues the same average
        save_file({f"shadow/{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                  str(policy_dir / EMA_FILE))


def _resume(cfg: TrainConfig, last: Path, policy, optimizer, scheduler, generator, ema) -> tuple[int, list[float]]:
    saved = read_training_state(last).get("run", {})
    changed = {k: (saved.get(k), v) for k, v in _run_identity(cfg).items() if saved.get(k) != v}
    if changed:
        raise ConfigError(f"--resume: {last} was trained with different settings "
                          + ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in changed.items()))
    weights = load_policy(last / POLICY_DIR, map_location=cfg.device).state_dict()
    policy.load_state_dict(weights)
    state = restore_training_state(last, optimizer, scheduler, generator)
    if ema is not None:
        if "ema_optimization_step" not in state:
            raise ConfigError(f"--resume with --ema_decay: {last} was trained without an average")
        shadow = load_file(str(last / POLICY_DIR / EMA_FILE))
        for i, p in enumerate(ema.shadow_params):
            p.copy_(shadow[f"shadow/{i}"])
        ema.optimization_step = state["ema_optimization_step"]
    if state["iteration"] >= cfg.steps:
        raise ConfigError(f"--resume: {last} is at step {state['iteration']}, --steps={cfg.steps}: nothing left to do")
    return state["iteration"], list(state["history"])

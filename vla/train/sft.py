"""Supervised flow-matching training of a FlowVLAPolicy on a LeRobot dataset.

One loop, top to bottom: load and validate the dataset (before any compute),
size the policy from its features, normalise with its stats, then AdamW with
warmup and cosine decay, gradient clipping, TensorBoard scalars, a progress
bar, and checkpoints written atomically.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from vla.config import TrainConfig, resolve_threads, write_resolved_config
from vla.policy.finetune import apply_finetune_options
from vla.policy.flow_vla import IMAGE_PREFIX, FlowVLAPolicy
from vla.train.augment import random_shift


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_with_warmup(step: int, warmup: int, total: int, floor: float = 0.05) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def policy_for_dataset(cfg: TrainConfig, dataset) -> FlowVLAPolicy:
    """Take state/action sizes and camera names from the data, not from the user."""
    pcfg = cfg.policy
    pcfg.state_dim = int(dataset.features["observation.state"]["shape"][0])
    pcfg.action_dim = int(dataset.features["action"]["shape"][0])
    cameras = [k[len(IMAGE_PREFIX):] for k in dataset.camera_keys]
    missing = [c for c in pcfg.cameras if c not in cameras]
    if missing:
        raise ValueError(f"policy.cameras {pcfg.cameras}: {missing} not in the dataset (it has {cameras})")
    pcfg.validate()
    if pcfg.init:
        from vla.policy.pretrained import init_for_dataset

        return init_for_dataset(pcfg, dataset.stats, cameras)
    policy = FlowVLAPolicy(pcfg)
    policy.normalizer.load_stats(dataset.stats)
    apply_finetune_options(policy)
    return policy


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    from vla.data import LeRobotDataset  # pyarrow lives in the [train] extra

    resolve_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir)
    if cfg.policy.init:  # the chunk length is the checkpoint's: the dataset must cut chunks to match
        from vla.policy.pretrained import checkpoint_chunking

        cfg.policy.chunk_size, cfg.policy.n_action_steps = checkpoint_chunking(cfg.policy.init)
    dataset = LeRobotDataset(cfg.dataset, action_horizon=cfg.policy.chunk_size)
    policy = policy_for_dataset(cfg, dataset).to(cfg.device).train()
    write_resolved_config(cfg, out)
    n_params = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    print(f"training {cfg.policy.preset} policy ({n_params / 1e6:.2f}M trainable parameters) on "
          f"{dataset.num_episodes} episodes / {dataset.num_frames} frames from {cfg.dataset}")

    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = RandomSampler(dataset, replacement=True, num_samples=cfg.steps * cfg.batch_size, generator=generator)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=0, drop_last=True)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, cfg.warmup_steps, cfg.steps))
    writer = SummaryWriter(str(out / "tb"))
    camera_keys = [IMAGE_PREFIX + c for c in cfg.policy.cameras]

    start, history = time.time(), []
    bar = tqdm(loader, total=cfg.steps, desc="train", disable=not progress, dynamic_ncols=True)
    for step, batch in enumerate(bar):
        for key in camera_keys:
            batch[key] = random_shift(batch[key], cfg.image_shift, generator)
        loss, info = policy(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}; last checkpoint kept at {out / 'checkpoints'}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        history.append(info["loss"])
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            writer.add_scalar("train/loss", info["loss"], step)
            writer.add_scalar("train/grad_norm", float(grad_norm), step)
            writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{np.mean(history[-cfg.log_every:]):.4f}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            policy.save_pretrained(out / "checkpoints" / "last")
    elapsed = time.time() - start
    writer.close()
    final = out / "policy"
    policy.save_pretrained(final)
    summary = {"steps": cfg.steps, "batch_size": cfg.batch_size, "seconds": elapsed,
               "samples_per_second": cfg.steps * cfg.batch_size / max(elapsed, 1e-9),
               "final_loss_avg_last_100": float(np.mean(history[-100:]))}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"trained {cfg.steps} steps in {elapsed:.0f} s ({summary['samples_per_second']:.0f} samples/s), "
          f"final loss {summary['final_loss_avg_last_100']:.4f}")
    print(f"policy written to {final}; TensorBoard logs in {out / 'tb'}")
    return final

"""`vla train-world-model`: SRPO's small video encoder, trained self-supervised on the project's frames.

Objective: temporal-contrastive (InfoNCE, as in time-contrastive networks). A training example is a pair
of clips from one episode that start at most max_offset frames apart: they must embed close to each
other and far from the batch's other clips, which come from other episodes or other moments of the same
one. What separates moments of an episode is what changed in the scene (the gripper moved, the can
rose), which is what a progress reward needs the embedding to see; colours and textures that never
change within an episode earn nothing. No labels, no success flags: any LeRobot dataset with the camera
works (scripted demos, recorded rollouts).

Top to bottom: load every episode's frames of the camera (resized once) -> per step, draw clip pairs
and shift them (augmentation) -> InfoNCE on cosine similarities, both directions -> AdamW step ->
save the encoder (.safetensors, world_model.py) atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vla.atomic_io import write_json_atomic
from vla.config import ConfigError, WorldModelConfig, resolve_threads
from vla.rl.srpo.world_model import VideoEncoder, save_video_encoder

IMAGE_PREFIX = "observation.images."


def load_episodes(cfg: WorldModelConfig) -> list[torch.Tensor]:
    """Each episode's frames of cfg.camera, uint8 [L, S, S, 3] at cfg.image_size."""
    from vla.data.dataset import LeRobotDataset

    key = IMAGE_PREFIX + cfg.camera
    episodes = []
    for root in cfg.datasets:
        try:
            dataset = LeRobotDataset(root)
        except ValueError as exc:  # DatasetError names the path and the problem
            raise ConfigError(f"--datasets: {exc}") from exc
        if key not in dataset.camera_keys:
            have = [k[len(IMAGE_PREFIX):] for k in dataset.camera_keys]
            raise ConfigError(f"--camera: dataset {root} has no camera {cfg.camera!r} (it has {have or 'no cameras'}; "
                              "record one with `vla collect --env.cameras=[agentview]`)")
        for start, stop in dataset.episode_ranges:
            frames = torch.as_tensor(np.stack([dataset.image(key, i) for i in range(start, stop)]))
            x = frames.permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
            episodes.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous())
        dataset.close()
    return episodes


def clip(frames: torch.Tensor, start: int, n: int, stride: int) -> torch.Tensor:
    """n frames from start, every stride frames, held at the episode's last frame past its end."""
    idx = torch.clamp(start + stride * torch.arange(n), max=frames.shape[0] - 1)
    return frames[idx]


def shift(videos: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation of each video by up to pad pixels (edge padding), the same for all its frames."""
    if pad <= 0:
        return videos
    b, t, h, w, c = videos.shape
    x = videos.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w).float()
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).tolist()
    x = torch.stack([x[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    return x.reshape(b, t, c, h, w).permute(0, 1, 3, 4, 2).to(torch.uint8)


def draw_pairs(episodes: list[torch.Tensor], cfg: WorldModelConfig, generator: torch.Generator):
    """A batch of clip pairs: uint8 [B, clip_frames, S, S, 3] twice."""
    first, second = [], []
    for _ in range(cfg.batch_size):
        frames = episodes[int(torch.randint(len(episodes), (1,), generator=generator))]
        n = frames.shape[0]
        a = int(torch.randint(n, (1,), generator=generator))
        offset = int(torch.randint(-cfg.max_offset, cfg.max_offset + 1, (1,), generator=generator))
        b = min(max(a + offset, 0), n - 1)
        first.append(clip(frames, a, cfg.clip_frames, cfg.frame_stride))
        second.append(clip(frames, b, cfg.clip_frames, cfg.frame_stride))
    return torch.stack(first), torch.stack(second)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of z1 matches row i of z2 against every other row."""
    logits = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).T / temperature
    target = torch.arange(len(z1), device=z1.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def validate(cfg: WorldModelConfig) -> None:
    if not cfg.datasets:
        raise ConfigError("--datasets: give at least one LeRobot dataset with camera frames, "
                          "e.g. --datasets='[outputs/demos/lift]'")
    if Path(cfg.output).exists() and not cfg.overwrite:
        raise ConfigError(f"--output: {cfg.output} already exists; pass --overwrite=true to replace it")
    for name in ("image_size", "width", "clip_frames", "frame_stride", "steps", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.image_size % 8:
        raise ConfigError(f"--image_size must be a multiple of 8 (three stride-2 convolutions), got {cfg.image_size}")
    if cfg.width % 4:
        raise ConfigError(f"--width must be a multiple of 4 (4 attention heads), got {cfg.width}")
    if cfg.batch_size < 2:
        raise ConfigError("--batch_size must be >= 2: the other pairs of a batch are each clip's negatives")
    if cfg.max_offset < 0 or cfg.image_shift < 0 or not cfg.temperature > 0 or not cfg.lr > 0:
        raise ConfigError("--max_offset and --image_shift must be >= 0, --temperature and --lr > 0")


def train_world_model(cfg: WorldModelConfig, progress: bool = False) -> dict:
    """Train and save the encoder; returns a summary (also written beside it as <output>.json)."""
    validate(cfg)
    resolve_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    episodes = load_episodes(cfg)
    if not episodes:
        raise ConfigError(f"--datasets {cfg.datasets}: no episodes")
    device = torch.device(cfg.device)
    model = VideoEncoder(cfg.image_size, cfg.width).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    print(f"train-world-model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{len(episodes)} episodes ({sum(len(e) for e in episodes)} frames of {cfg.camera}), {cfg.steps} steps")
    losses, start = [], time.time()
    for step in range(cfg.steps):
        a, b = draw_pairs(episodes, cfg, generator)
        a, b = shift(a, cfg.image_shift, generator).to(device), shift(b, cfg.image_shift, generator).to(device)
        loss = info_nce(model(a), model(b), cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress and (step % 100 == 0 or step + 1 == cfg.steps):
            print(f"step {step + 1}/{cfg.steps}: InfoNCE {losses[-1]:.4f}")
    window = max(1, min(20, len(losses) // 4))  # the loss of one batch is noisy: compare averages
    summary = {"steps": cfg.steps, "loss_first": float(np.mean(losses[:window])),
               "loss_last": float(np.mean(losses[-window:])), "seconds": time.time() - start,
               "episodes": len(episodes), "datasets": list(cfg.datasets), "camera": cfg.camera,
               "chance_loss": float(np.log(cfg.batch_size))}
    save_video_encoder(model.eval(), cfg.output, extra=summary)
    write_json_atomic(str(cfg.output) + ".json", summary)
    print(f"saved {cfg.output}: InfoNCE {summary['loss_first']:.3f} -> {summary['loss_last']:.3f} "
          f"(chance {summary['chance_loss']:.3f}); use it with --algo srpo --srpo.encoder=video "
          f"--srpo.encoder_path={cfg.output}")
    return summary

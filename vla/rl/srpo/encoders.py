"""SRPO's world-model encoders behind one interface: a video uint8 [B, T, H, W, 3] -> embedding [B, D].

- "policy_vision": a frozen copy of the policy's own vision tower, run on every frame; the embedding is
  the mean over all patch tokens of all frames. Free of extra weights, but only a policy with a camera
  has one (a state policy refuses, naming the other two);
- "video": the small video encoder `vla train-world-model` trains on the project's own frames
  (vla/rl/srpo/world_model.py), loaded from its .safetensors file;
- "vjepa2": V-JEPA 2 through transformers' VJEPA2Model, loaded from a local folder (nothing is
  downloaded); frames resized to its crop size and normalised with ImageNet's mean and std, as its
  video processor does; the embedding is the mean of the encoder's output tokens (the predictor is skipped).

Every encoder is frozen (eval mode, no gradients): the reward must not move while the policy learns.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vla.config import ConfigError

ENCODERS = ("policy_vision", "video", "vjepa2")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Encoder:
    """A frozen world-model encoder: name, embedding size dim, and embed (a torch function of uint8 videos)."""

    def __init__(self, name: str, dim: int, embed: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 batch: int = 8):
        self.name, self.dim, self._embed, self.device, self.batch = name, int(dim), embed, torch.device(device), batch

    @torch.no_grad()
    def __call__(self, videos: np.ndarray) -> np.ndarray:
        """uint8 [B, T, H, W, 3] -> float64 [B, D], self.batch videos per call of the model."""
        out = [self._embed(torch.as_tensor(videos[i:i + self.batch]).to(self.device)).double().cpu()
               for i in range(0, len(videos), self.batch)]
        return torch.cat(out).numpy()


def policy_vision_encoder(policy, camera: str, batch: int = 8) -> Encoder:
    c = policy.config
    if not c.cameras:
        raise ConfigError(f"--srpo.encoder=policy_vision needs a policy with a camera: this {c.type} policy reads "
                          "no images, so it has no vision encoder to copy. Use --srpo.encoder=video (a video encoder "
                          "from `vla train-world-model`) or --srpo.encoder=vjepa2, with --srpo.encoder_path")
    if not hasattr(policy, "vision"):
        raise ConfigError(f"--srpo.encoder=policy_vision: a {c.type} policy has no vision tower (.vision) to copy")
    vision = copy.deepcopy(policy.vision).eval().requires_grad_(False)
    dtype = next(vision.parameters()).dtype
    # SmolVLA runs its tower through vision_features (full square images); the SigLIP VLA calls it directly.
    # Both read only .vision and .config, so the frozen copy stands in for the policy there.
    features = getattr(type(policy), "vision_features", None)
    frozen = SimpleNamespace(vision=vision, config=c)
    key = "observation.images." + camera

    def embed(videos: torch.Tensor) -> torch.Tensor:
        b, t = videos.shape[:2]
        # the policy's own preprocessing (resize, [-1, 1]); it reads only the policy's config
        pixels = policy._images({key: videos.reshape(b * t, *videos.shape[2:])}, camera).to(dtype)
        tokens = vision(pixel_values=pixels).last_hidden_state if features is None else features(frozen, pixels)
        return tokens.float().reshape(b, -1, tokens.shape[-1]).mean(dim=1)

    return Encoder("policy_vision", c.vision_width, embed, policy.device, batch)


def video_encoder(path: str, device, batch: int = 8) -> Encoder:
    from vla.rl.srpo.world_model import load_video_encoder

    if not path:
        raise ConfigError("--srpo.encoder=video needs --srpo.encoder_path: the .safetensors file that "
                          "`vla train-world-model` wrote")
    try:
        model = load_video_encoder(path).to(device)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"--srpo.encoder_path: {exc}") from exc
    return Encoder("video", model.dim, model, device, batch)


def vjepa2_encoder(path: str, n_frames: int, device, batch: int = 8) -> Encoder:
    if not path:
        raise ConfigError("--srpo.encoder=vjepa2 needs --srpo.encoder_path: a local folder holding a V-JEPA 2 "
                          "checkpoint (config.json and its weights); nothing is downloaded")
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"--srpo.encoder_path={path}: no config.json there; point it at a V-JEPA 2 model folder "
                          "(as transformers' save_pretrained writes it)")
    from transformers import VJEPA2Model

    try:
        model = VJEPA2Model.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--srpo.encoder_path={path}: not a loadable V-JEPA 2 checkpoint ({exc})") from exc
    model = model.to(device).eval().requires_grad_(False)
    c = model.config
    if n_frames % c.tubelet_size:
        raise ConfigError(f"--srpo.n_frames={n_frames}: V-JEPA 2 groups frames in tubelets of {c.tubelet_size}; "
                          f"use a multiple of {c.tubelet_size}")
    dtype = next(model.parameters()).dtype
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def embed(videos: torch.Tensor) -> torch.Tensor:
        b, t = videos.shape[:2]
        x = videos.reshape(b * t, *videos.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(c.crop_size, c.crop_size), mode="bilinear", align_corners=False)
        x = ((x - mean) / std).reshape(b, t, 3, c.crop_size, c.crop_size).to(dtype)
        return model(pixel_values_videos=x, skip_predictor=True).last_hidden_state.float().mean(dim=1)

    return Encoder("vjepa2", c.hidden_size, embed, device, batch)


def build_encoder(srpo, policy, camera: str) -> Encoder:
    """The encoder srpo (an SRPOConfig) names, on the policy's device."""
    if srpo.encoder == "policy_vision":
        return policy_vision_encoder(policy, camera, srpo.encode_batch)
    if srpo.encoder == "video":
        return video_encoder(srpo.encoder_path, policy.device, srpo.encode_batch)
    if srpo.encoder == "vjepa2":
        return vjepa2_encoder(srpo.encoder_path, srpo.n_frames, policy.device, srpo.encode_batch)
    raise ConfigError(f"--srpo.encoder: {srpo.encoder!r} is not one of {', '.join(ENCODERS)}")

"""SRPO's small video encoder: what `vla train-world-model` trains and `--srpo.encoder=video` loads.

A video uint8 [B, T, H, W, 3] becomes one token per frame (a three-layer CNN whose whole feature map,
positions included, is projected to `width`: where the object and the gripper are is what progress is
made of), then one transformer layer lets the frames of a video see each other. The embedding is the
mean over the tokens, like V-JEPA 2's in the paper. There is no temporal position embedding: the
tokens form a set, so the encoder takes videos of any length (training clips are shorter than SRPO's
videos) and the embedding says which states an episode went through.

Saved as one .safetensors file whose metadata holds the architecture (FORMAT, config).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "vla-srpo-video-encoder"
DOWNSAMPLE = 8  # three stride-2 convolutions


class VideoEncoder(nn.Module):
    def __init__(self, image_size: int = 64, width: int = 64):
        super().__init__()
        if image_size % DOWNSAMPLE or image_size < DOWNSAMPLE:
            raise ValueError(f"image_size must be a positive multiple of {DOWNSAMPLE}, got {image_size}")
        self.image_size, self.width = int(image_size), int(width)
        self.cnn = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 4, 2, 1), nn.GELU(),
                                 nn.Conv2d(64, 64, 4, 2, 1), nn.GELU())
        side = image_size // DOWNSAMPLE
        self.project = nn.Linear(64 * side * side, width)
        self.norm = nn.LayerNorm(width)
        self.temporal = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.0,
                                                   batch_first=True, norm_first=True)

    @property
    def dim(self) -> int:
        return self.width

    def config(self) -> dict:
        return {"image_size": self.image_size, "width": self.width}

    def pixels(self, videos: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> float [B * T, 3, S, S] in [-1, 1] at the encoder's image size."""
        b, t = videos.shape[:2]
        x = videos.reshape(b * t, *videos.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x * 2.0 - 1.0

    def tokens(self, pixels: torch.Tensor, b: int) -> torch.Tensor:
        """[B * T, 3, S, S] pixels -> [B, T, width] tokens."""
        frames = self.project(self.cnn(pixels).flatten(1))
        return self.temporal(self.norm(frames).reshape(b, -1, self.width))

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> embeddings [B, width] (mean over tokens)."""
        return self.tokens(self.pixels(videos), videos.shape[0]).mean(dim=1)


def save_video_encoder(model: VideoEncoder, path: str | Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(".tmp-" + path.name)
    save_file(state, str(tmp), metadata={"format": FORMAT, "config": json.dumps(model.config()),
                                         "training": json.dumps(extra or {})})
    tmp.replace(path)  # never a half-written encoder under the final name


def load_video_encoder(path: str | Path) -> VideoEncoder:
    """The encoder saved at path; ValueError naming the file when it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no video encoder there (train one with `vla train-world-model`)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a file of another kind
        raise ValueError(f"{path}: not a safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a video encoder written by `vla train-world-model` "
                         f"(metadata format {meta.get('format')!r}, expected {FORMAT!r})")
    model = VideoEncoder(**json.loads(meta["config"]))
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)

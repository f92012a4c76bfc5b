"""Image augmentation for few-demonstration training."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each uint8 image [B, H, W, C] by up to `pad` pixels (replicate padding, then a random crop).

    With a handful of demonstrations a small policy memorises pixel positions;
    shifting makes it read the scene instead (DrQ's observation).
    """
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    x = images.permute(0, 3, 1, 2).float()
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])  # [B, H]
    cols = (dx[:, None] + torch.arange(w)[None])  # [B, W]
    x = x[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
          rows[:, None, :, None], cols[:, None, None, :]]
    return x.permute(0, 2, 3, 1).round().to(images.dtype)

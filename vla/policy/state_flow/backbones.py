"""Velocity networks of the state-based flow policy: v(x_t, t | observation features).

Both take the noisy chunk x_t [B, H, A], the flow time t [B] and the observation features
[B, C], and return the velocity [B, H, A] and per-row hidden features [B, H, W] (Flow-Noise's
std head reads those). Two families that flow and diffusion policies on low-dimensional state
use: a residual MLP over the flattened chunk (DPPO's) and a 1-D temporal U-Net over the chunk's
time axis with FiLM conditioning (diffusion policy's).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """t in [0, 1] -> [B, dim] sin/cos features at geometric frequencies, then an MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.Mish(), nn.Linear(dim * 2, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = 100.0 * t.float()[:, None] * freqs[None]  # t spans [0, 1]: scale it to the usual step range
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width * 2), nn.Mish(), nn.Linear(width * 2, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.net(h)


class ResidualMLPVelocity(nn.Module):
    def __init__(self, horizon: int, action_dim: int, cond_dim: int, width: int, num_blocks: int):
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        self.time = SinusoidalTimeEmbedding(width)
        self.inp = nn.Linear(horizon * action_dim + width + cond_dim, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, horizon * action_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x_t.shape[0]
        h = self.inp(torch.cat([x_t.reshape(b, -1), self.time(t), cond], dim=-1))
        h = self.norm(self.blocks(h))
        v = self.out(h).reshape(b, self.horizon, self.action_dim)
        return v, h[:, None].expand(b, self.horizon, h.shape[-1])  # one feature vector for every row


class FiLMConvBlock(nn.Module):
    """Conv1d - GroupNorm - Mish twice, the first modulated by (scale, shift) from the conditioning."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int = 5):
        super().__init__()
        groups = min(8, c_out)
        self.conv1 = nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish())
        self.conv2 = nn.Sequential(nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish())
        self.film = nn.Linear(cond_dim, 2 * c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[..., None].chunk(2, dim=1)
        h = self.conv1(x) * (1 + scale) + shift
        return self.conv2(h) + self.skip(x)


class TemporalUNetVelocity(nn.Module):
    """Two resolution levels over the chunk's time axis (the horizon must be divisible by 4)."""

    def __init__(self, horizon: int, action_dim: int, cond_dim: int, width: int):
        super().__init__()
        if horizon % 4:
            raise ValueError(f"the U-Net backbone halves the chunk twice: chunk_size {horizon} must be a multiple of 4")
        c1, c2 = max(8, width // 2), width
        self.time = SinusoidalTimeEmbedding(width)
        cd = width + cond_dim
        self.down1, self.down2 = FiLMConvBlock(action_dim, c1, cd), FiLMConvBlock(c1, c2, cd)
        self.pool1, self.pool2 = nn.Conv1d(c1, c1, 3, stride=2, padding=1), nn.Conv1d(c2, c2, 3, stride=2, padding=1)
        self.mid = FiLMConvBlock(c2, c2, cd)
        self.up2 = nn.ConvTranspose1d(c2, c2, 4, stride=2, padding=1)
        self.dec2 = FiLMConvBlock(2 * c2, c1, cd)
        self.up1 = nn.ConvTranspose1d(c1, c1, 4, stride=2, padding=1)
        self.dec1 = FiLMConvBlock(2 * c1, c1, cd)
        self.out = nn.Conv1d(c1, action_dim, 1)
        self.feature_dim = c1

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.cat([self.time(t), cond], dim=-1)
        x = x_t.transpose(1, 2)  # [B, A, H]: convolve along the chunk's time axis
        h1 = self.down1(x, c)
        h2 = self.down2(self.pool1(h1), c)
        h = self.mid(self.pool2(h2), c)
        h = self.dec2(torch.cat([self.up2(h), h2], dim=1), c)
        h = self.dec1(torch.cat([self.up1(h), h1], dim=1), c)
        return self.out(h).transpose(1, 2), h.transpose(1, 2)

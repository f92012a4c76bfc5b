"""Latent reasoning of the state policy: think in a few latent tokens, decide how long, then act (LAPO).

docs/ALGORITHMS.md section 5. From the observation embedding e [B, W]:

    h_0 = 0, x_1 = e
    h_i = GRUCell(x_i, h_{i-1}),  latent z_i = h_i,  x_{i+1} = z_i     (i = 1 .. L_max)

so each latent is the previous hidden state fed back as the next input. After each group of
`latent_group` latents an end decision reads the latent there: l_m = w . z_{L_m} + b at the candidate
lengths L_m, and the length distribution is p_m = softmax(l_m / beta). The velocity network reads
[e, pool(z_1 .. z_L)], an attention pooling with one learned query over the first L latents only.

The whole chain (L_max latents) is always produced, because p_m needs every candidate's end logit; the
chosen length decides which latents the actions see. Teacher forcing (RL's recompute) feeds the stored
latents z_old_i as the inputs x_{i+1} for i < L and lets the chain run on its own beyond L, so nothing
stored past the chosen length is read (docs/DECISIONS.md says why).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vla.policy.latent_reasoning import LengthHead, latent_mask


class LatentReasoner(LengthHead):
    """The recurrent thinking block, the end-decision head (LengthHead) and the latent pooling (module docstring)."""

    def __init__(self, width: int, candidates: list[int], beta: float):
        super().__init__(width, candidates, beta)
        self.cell = nn.GRUCell(width, width)
        self.query = nn.Parameter(torch.zeros(width))
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)

    def think(self, e: torch.Tensor, forced: torch.Tensor | None = None,
              lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Latents [B, L_max, W] from the observation embedding e [B, W]. With `forced` [B, L_max, W] and
        `lengths` [B], the inputs of the latents within each row's length are the forced ones."""
        if (forced is None) != (lengths is None):
            raise ValueError("teacher forcing needs both the stored latents and their lengths")
        if forced is not None and tuple(forced.shape[1:]) != (self.max_length, self.width):
            raise ValueError(f"stored latents have shape {tuple(forced.shape)}, this policy thinks in "
                             f"[B, {self.max_length}, {self.width}]")
        h = torch.zeros_like(e)
        x = e
        out = []
        for i in range(self.max_length):
            h = self.cell(x, h)
            out.append(h)
            x = h if forced is None else torch.where((i < lengths)[:, None], forced[:, i].to(h), h)
        return torch.stack(out, dim=1)

    def pool(self, latents: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, W]: attention of one learned query over the first `lengths` latents (the rest masked out)."""
        scores = self.key(latents) @ self.query / math.sqrt(self.width)
        scores = scores.masked_fill(~latent_mask(lengths, latents.shape[1]), float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return (weights[..., None] * self.value(latents)).sum(1)

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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Reasoning:
    """One thought per batch row: every latent of the chain, the chosen length and the length distribution."""

    latents: torch.Tensor  # [B, L_max, W]; rows past their length are never read by the actions
    lengths: torch.Tensor  # [B] long, each one of the candidate lengths
    length_log_probs: torch.Tensor  # [B, M] log p_m over the candidate lengths
    candidates: tuple[int, ...]
    think_s: float = 0.0  # wall time of the whole batch's thinking (rollouts log it per chunk)

    def chosen(self) -> torch.Tensor:
        """Index m [B] of each row's length among the candidates."""
        return length_index(self.lengths, self.candidates)

    def chosen_log_prob(self) -> torch.Tensor:
        """log pi(end_L) [B] of each row's chosen length."""
        return self.length_log_probs.gather(1, self.chosen()[:, None]).squeeze(1)

    def select(self, rows: torch.Tensor) -> "Reasoning":
        return Reasoning(self.latents.index_select(0, rows), self.lengths.index_select(0, rows),
                         self.length_log_probs.index_select(0, rows), self.candidates, self.think_s)

    def record(self) -> dict[str, torch.Tensor]:
        """What a rollout keeps per decision (detached): the latents, the length, its old log-prob and the
        thinking time per chunk."""
        b = self.lengths.shape[0]
        return {"latents": self.latents.detach(), "lengths": self.lengths.detach(),
                "length_log_prob": self.chosen_log_prob().detach(),
                "think_s": torch.full((b,), self.think_s / max(b, 1))}


def length_index(lengths: torch.Tensor, candidates) -> torch.Tensor:
    """The candidate index m of each length [B]; a length that is not a candidate is an error."""
    table = torch.tensor(candidates, device=lengths.device)
    hit = lengths[:, None] == table[None]
    if not bool(hit.any(1).all()):
        bad = sorted(set(lengths[~hit.any(1)].tolist()))
        raise ValueError(f"latent lengths {bad} are not among the candidate lengths {list(candidates)}")
    return hit.float().argmax(1)


def latent_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """[B, L_max] bool: True for the latents within each row's length."""
    return torch.arange(max_length, device=lengths.device)[None] < lengths[:, None]


class LatentReasoner(nn.Module):
    """The recurrent thinking block, the end-decision head and the latent pooling (module docstring)."""

    def __init__(self, width: int, candidates: list[int], beta: float):
        super().__init__()
        self.width, self.candidates, self.beta = width, tuple(int(n) for n in candidates), float(beta)
        self.max_length = self.candidates[-1]
        self.cell = nn.GRUCell(width, width)
        self.end = nn.Linear(width, 1)
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

    def length_log_probs(self, latents: torch.Tensor) -> torch.Tensor:
        """log p_m [B, M]: log_softmax(l_m / beta) of the end logits at the candidate lengths."""
        at = torch.tensor([n - 1 for n in self.candidates], device=latents.device)
        logits = self.end(latents.index_select(1, at)).squeeze(-1)
        return F.log_softmax(logits.float() / self.beta, dim=-1)

    def pool(self, latents: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, W]: attention of one learned query over the first `lengths` latents (the rest masked out)."""
        scores = self.key(latents) @ self.query / math.sqrt(self.width)
        scores = scores.masked_fill(~latent_mask(lengths, latents.shape[1]), float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return (weights[..., None] * self.value(latents)).sum(1)

    def evaluation_lengths(self, log_probs: torch.Tensor, threshold: float) -> torch.Tensor:
        """At evaluation: the first candidate whose probability reaches `threshold`, else the most likely."""
        probs = log_probs.exp()
        confident = probs >= threshold
        first = confident.float().argmax(1)  # the first True (argmax returns the first maximum)
        pick = torch.where(confident.any(1), first, probs.argmax(1))
        return torch.tensor(self.candidates, device=log_probs.device)[pick]

    def sampled_lengths(self, log_probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """In training: lengths drawn from p_m (on the generator's device, so CPU runs are reproducible)."""
        probs = log_probs.exp().to(generator.device if generator is not None else "cpu")
        pick = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(log_probs.device)
        return torch.tensor(self.candidates, device=log_probs.device)[pick]

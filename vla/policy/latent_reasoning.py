"""What every latent-reasoning policy shares (LAPO, docs/ALGORITHMS.md section 5): the thought a policy
carries from its reasoning to its actions, the length distribution over the candidate lengths, and the
warm-up's length and latent terms. How the latents are produced is the policy type's own: a GRU cell for the
state policy (state_flow/reasoning.py), the prefix stream for the VLA (flow_vla/reasoning.py).

Length: after each group of latents an end decision reads the latent there, l_m = w . z_{L_m} + b at the
candidate lengths L_m, and p_m = softmax(l_m / beta); drawn in RL rollouts, at evaluation the first
candidate with p >= threshold, else the most likely.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Batch keys of the warm-up's latent targets: the observation latent_stride, 2 * latent_stride, ... frames
# ahead, [B, L_max, ...] each, and which of them lie past the episode's end (LeRobotDataset's future_offsets).
FUTURE_PREFIX, FUTURE_PAD_KEY = "future.", "future_is_pad"


def latent_target_offsets(config) -> list[int]:
    """Frames ahead of latent i's warm-up target (a PolicyConfig's): latent_stride * i, i = 1 .. the longest
    candidate length."""
    return [config.latent_stride * i for i in range(1, max(config.latent_lengths) + 1)]


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


class LengthHead(nn.Module):
    """The end decision at the candidate lengths and the length distribution it defines."""

    def __init__(self, width: int, candidates: list[int], beta: float):
        super().__init__()
        self.width, self.candidates, self.beta = width, tuple(int(n) for n in candidates), float(beta)
        self.max_length = self.candidates[-1]
        self.end = nn.Linear(width, 1)

    def length_log_probs(self, latents: torch.Tensor) -> torch.Tensor:
        """log p_m [B, M]: log_softmax(l_m / beta) of the end logits at the candidate lengths."""
        at = torch.tensor([n - 1 for n in self.candidates], device=latents.device)
        logits = self.end(latents.index_select(1, at)).squeeze(-1)
        return F.log_softmax(logits.float() / self.beta, dim=-1)

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

    def choose(self, log_probs: torch.Tensor, sample: bool, generator: torch.Generator | None,
               threshold: float) -> torch.Tensor:
        return self.sampled_lengths(log_probs, generator) if sample else self.evaluation_lengths(log_probs, threshold)

    def uniform(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Warm-up lengths: candidate indices [n] drawn uniformly (torch's global generator) and the lengths."""
        pick = torch.randint(len(self.candidates), (n,)).to(device)
        return pick, torch.tensor(self.candidates, device=device)[pick]


def warm_up_latent_loss(latents: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                        pad: torch.Tensor) -> torch.Tensor:
    """Mean over the latents within each row's length and not past the episode's end of
    1 - cos(z_i, sg(target_i)); the targets are detached here (stop-gradient, docs/DECISIONS.md)."""
    cos = F.cosine_similarity(latents.float(), targets.detach().float(), dim=-1)  # [B, L_max]
    keep = (latent_mask(lengths, latents.shape[1]) & ~pad.to(latents.device)).float()
    return ((1 - cos) * keep).sum() / keep.sum().clamp(min=1)

"""Advantage estimators shared by the RL algorithms (ALGORITHMS.md sections 2 and 5).

- GRPO: a trajectory's reward normalised within its group, A_i = (r_i - mean_G) / (std_G + eps),
  broadcast to every decision of the trajectory. std is the sample std (verl's torch.std);
  a group of one rollout, or one where all rewards are equal, gets A = 0.
- Dynamic sampling: keep only groups whose success rate lies in [low, high].
- GAE over the decisions of each trajectory; the episode end (success or time limit) is terminal.
"""

from __future__ import annotations

import torch


def group_normalized_advantages(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-trajectory rewards [T] and group ids [T] -> advantages [T]."""
    if rewards.shape != groups.shape or rewards.dim() != 1:
        raise ValueError(f"rewards {tuple(rewards.shape)} and groups {tuple(groups.shape)} must be matching 1-D tensors")
    rewards = rewards.double()
    adv = torch.zeros_like(rewards)
    for g in groups.unique():
        members = groups == g
        r = rewards[members]
        if r.numel() < 2:
            continue
        adv[members] = (r - r.mean()) / (r.std() + eps)
    return adv.float()


def group_success_rates(success: torch.Tensor, groups: torch.Tensor) -> dict[int, float]:
    return {int(g): float(success[groups == g].float().mean()) for g in groups.unique()}


def dynamic_sampling_keep(success: torch.Tensor, groups: torch.Tensor, low: float = 0.1,
                          high: float = 0.9) -> torch.Tensor:
    """[T] bool: trajectories whose group's success rate lies in [low, high].

    All-success and all-failure groups carry no GRPO signal (every A is 0); dropping them keeps
    the batch's average gradient from being diluted by zeros (DAPO's dynamic sampling)."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"dynamic sampling needs 0 <= low <= high <= 1, got [{low}, {high}]")
    rates = group_success_rates(success, groups)
    return torch.tensor([low <= rates[int(g)] <= high for g in groups], dtype=torch.bool)


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, trajectories: list[list[int]],
        gamma: float = 0.99, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation per trajectory; returns (advantages, returns), each [N].

    ``trajectories`` lists each trajectory's decision indices in time order. A decision with
    done=True is terminal (no bootstrap); a trajectory cut before done bootstraps from 0 too,
    since its next value is unknown."""
    adv = torch.zeros_like(rewards, dtype=torch.float64)
    r, v, d = rewards.double(), values.double(), dones.double()
    for decisions in trajectories:
        next_adv, next_value = 0.0, 0.0
        for i in reversed(decisions):
            nonterminal = 1.0 - d[i]
            delta = r[i] + gamma * next_value * nonterminal - v[i]
            next_adv = delta + gamma * lam * nonterminal * next_adv
            adv[i] = next_adv
            next_value = v[i]
    return adv.float(), (adv + v).float()

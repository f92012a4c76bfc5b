"""Advantage estimators shared by the RL algorithms (docs/ALGORITHMS.md sections 2 and 5).

- GRPO: a trajectory's reward normalised within its group, A_i = (r_i - mean_G) / (std_G + eps),
  broadcast to every decision of the trajectory. std is the sample std (verl's torch.std);
  a group of one rollout, or one where all rewards are equal, gets A = 0.
- Dynamic sampling: keep only groups whose success rate lies in [low, high].
- GAE over the decisions of each trajectory; the episode end (success or time limit) is terminal.
- Shaped rewards: the env's dense per-step reward summed per decision, plus, at the decision that
  reached success, the reward of staying successful until the time limit. Without that bonus a
  dense reward pays an episode for lasting: hovering next to the cube for 200 steps would
  return more than lifting it in 60.
"""

from __future__ import annotations

import torch


STD_SCOPES = ("group", "batch")


def group_normalized_advantages(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6,
                                std_scope: str = "group") -> torch.Tensor:
    """Per-trajectory rewards [T] and group ids [T] -> advantages [T].

    The baseline is always the group mean. std_scope "group" divides by each group's std (the
    spec'd GRPO); "batch" divides every group's centred rewards by one std over the whole batch,
    so a group whose returns barely differ keeps small advantages instead of being blown up to
    unit scale (with dense rewards an all-failure group's differences are mostly noise)."""
    if rewards.shape != groups.shape or rewards.dim() != 1:
        raise ValueError(f"rewards {tuple(rewards.shape)} and groups {tuple(groups.shape)} must be matching 1-D tensors")
    if std_scope not in STD_SCOPES:
        raise ValueError(f"std_scope must be one of {STD_SCOPES}, got {std_scope!r}")
    rewards = rewards.double()
    adv = torch.zeros_like(rewards)
    for g in groups.unique():
        members = groups == g
        r = rewards[members]
        if r.numel() < 2:
            continue
        adv[members] = (r - r.mean()) / (r.std() + eps) if std_scope == "group" else r - r.mean()
    if std_scope == "batch" and adv.numel() > 1:
        adv = adv / (adv.std() + eps)
    return adv.float()


def centre_per_group(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """values [N] minus the mean of their group's values (groups [N] ids): every group sums to zero."""
    out = values.clone()
    for g in groups.unique():
        members = groups == g
        out[members] = values[members] - values[members].mean()
    return out


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


def shaped_decision_rewards(env_rewards: torch.Tensor, trajectories, horizon: int,
                            success_reward: float = 1.0) -> torch.Tensor:
    """Per-decision shaped rewards [N]: env_rewards plus, at the last decision of each successful
    trajectory, success_reward * (horizon - its steps) (success treated as absorbing), all divided
    by the horizon.

    With per-step rewards of at most 1 a return is then at most 1 (the share of the best possible
    episode): PPO's freshly initialised value head fits targets of order 1, where raw returns of
    order 100 left it at explained variance 0 for a whole run."""
    rewards = env_rewards.double().clone()
    for t in trajectories:
        if t.success and t.decisions:
            rewards[t.decisions[-1]] += success_reward * max(horizon - t.steps, 0)
    return (rewards / horizon).float()


def decision_rewards(rollouts, reward: str, horizon: int) -> torch.Tensor:
    """Per-decision rewards [N] of a Rollouts batch: the binary success rewards ("success") or the
    shaped ones ("shaped", see shaped_decision_rewards)."""
    if reward == "shaped":
        return shaped_decision_rewards(rollouts.env_rewards, rollouts.trajectories, horizon)
    return rollouts.rewards


def trajectory_returns(decision_rewards: torch.Tensor, trajectories) -> torch.Tensor:
    """Undiscounted return per trajectory [T] from per-decision rewards."""
    return torch.tensor([float(decision_rewards[t.decisions].double().sum()) for t in trajectories])


def varying_groups_keep(returns: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """[T] bool: trajectories whose group's returns are not all equal (the others have A = 0)."""
    spread = {int(g): float(returns[groups == g].max() - returns[groups == g].min()) for g in groups.unique()}
    return torch.tensor([spread[int(g)] > 0 for g in groups], dtype=torch.bool)

"""GRPO on a flow policy: binary reward, group-normalised advantage, clip-higher, dynamic sampling.

docs/ALGORITHMS.md section 2. One update, top to bottom:
1. reward per trajectory = 1 on success else 0 (or, with reward=shaped, the
   trajectory's shaped return: dense env reward + the absorbing success bonus);
2. A_i = (r_i - mean_G r) / (std_G r + 1e-6) within each group of G rollouts
   that started from the same initial state (advantage_std=batch: one std over the
   batch instead of std_G), broadcast to every decision;
3. dynamic sampling: drop groups whose success rate is outside [low, high]
   (they have A = 0 everywhere: no signal, only dilution); with shaped returns,
   drop groups whose returns are all equal;
   with FPO's surrogate (ctx.flow_surrogate), re-centre each group's advantages over its
   decisions: a flow-matching loss gradient is not zero-mean over actions as a log-prob's is,
   and failures run longer (more decisions), so uncentred advantages would add a reward-blind
   "raise the loss everywhere" term;
4. for each epoch and shuffled minibatch of decisions: recompute the chain
   log-probs under the current weights, clipped loss
   -E[min(r A, clip(r, 1 - 0.2, 1 + 0.28) A)] (+ k3 KL to the reference), backward;
   every grad_accumulation minibatches one optimizer step with gradient clipping; the
   epochs stop early when a minibatch's approximate KL to the rollout policy exceeds
   target_kl (a partly accumulated step is dropped).
"""

from __future__ import annotations

import torch

from vla.rl.advantages import (centre_per_group, decision_rewards, dynamic_sampling_keep, group_normalized_advantages,
                               trajectory_returns, varying_groups_keep)
from vla.rl.losses import check_finite
from vla.rl.rollout import Rollouts
from vla.rl.update import (UpdateContext, epoch_minibatches, kl_exceeded, minibatch_policy_loss, optimizer_step,
                           recompute_log_prob, update_summary)


def grpo_update(ctx: UpdateContext, rollouts: Rollouts, cfg,
                trajectory_rewards: torch.Tensor | None = None) -> dict[str, float]:
    """One GRPO update from a batch of grouped rollouts; cfg is an RLConfig. Returns statistics.

    trajectory_rewards [T], when given, replace step 1's rewards (SRPO's progress rewards); dynamic
    sampling then keeps groups by success rate, as with binary rewards."""
    # 1-2. reward per trajectory (binary, or the shaped return) and group-normalised advantage
    success = rollouts.trajectory_success()
    groups = rollouts.trajectory_groups()
    if trajectory_rewards is None:
        returns = trajectory_returns(decision_rewards(rollouts, cfg.reward, cfg.env.max_episode_steps),
                                     rollouts.trajectories)  # binary rewards: the success flags
    else:
        returns = trajectory_rewards
    traj_adv = group_normalized_advantages(returns, groups, std_scope=cfg.advantage_std)
    check_finite("advantages", traj_adv, ctx.iteration)
    check_finite("old log-prob", rollouts.log_probs, ctx.iteration)

    # 3. dynamic sampling
    if cfg.dynamic_sampling and cfg.reward == "shaped" and trajectory_rewards is None:
        keep_traj = varying_groups_keep(returns, groups)
    elif cfg.dynamic_sampling:
        keep_traj = dynamic_sampling_keep(success, groups, cfg.dynamic_sampling_low, cfg.dynamic_sampling_high)
    else:
        keep_traj = torch.ones_like(success, dtype=torch.bool)
    advantages = traj_adv[rollouts.traj_ids]
    decisions = keep_traj[rollouts.traj_ids].nonzero().squeeze(1)
    if ctx.flow_surrogate is not None:
        advantages = centre_per_group(advantages, groups[rollouts.traj_ids])
    n_groups = int(groups.unique().numel())
    kept_groups = int(groups[keep_traj].unique().numel())
    stats = {"kept_groups": float(kept_groups), "kept_group_fraction": kept_groups / n_groups,
             "kept_decisions": float(decisions.numel())}
    if decisions.numel() == 0:
        return {**stats, "skipped_update": 1.0}

    # 4. clipped policy-gradient epochs over minibatches of decisions
    #    (stopping early once the policy has moved target_kl away from the rollout policy)
    rows, stopped = [], False
    for mb in epoch_minibatches(decisions, cfg.epochs, cfg.minibatch_size, ctx.generator,
                                 cfg.grad_accumulation):
        new = recompute_log_prob(ctx, rollouts, mb.idx)
        loss, loss_stats = minibatch_policy_loss(ctx, new, advantages[mb.idx], cfg)
        if kl_exceeded(loss_stats, cfg.target_kl):
            stopped = True
            break
        step = optimizer_step(ctx, loss, cfg.grad_clip, mb)
        rows.append({"policy_loss": float(loss.detach()), **step, **loss_stats})
    return {**stats, "skipped_update": 0.0, **update_summary(rows, stopped)}

"""PPO on a flow policy with a value head and GAE over decisions.

One update, top to bottom:
1. reward per decision = 1 if its chunk reached success else 0 (reward=shaped:
   the chunk's dense env reward, plus the absorbing success bonus); the episode end
   (success or time limit) is terminal;
2. GAE(gamma 0.99, lambda 0.95) over each trajectory's decisions with the
   values stored at rollout time; returns = advantages + values; advantages
   normalised over the batch (optional);
3. for each epoch and shuffled minibatch: encode the observations once, recompute
   the chain log-probs (policy) and the values (critic on the same pooled prefix
   features + state, detached from the policy), clipped policy loss
   (clip-higher, optional dual clip and k3 KL to the reference) + value_coef *
   0.5 * MSE(value, return), backward; every grad_accumulation minibatches one optimizer
   step with gradient clipping; stop early when a minibatch's approximate KL to the
   rollout policy exceeds target_kl (a partly accumulated step is dropped).
"""

from __future__ import annotations

import torch

from vla.rl.advantages import decision_rewards, gae
from vla.rl.heads import value_inputs
from vla.rl.losses import check_finite, value_loss
from vla.rl.rollout import Rollouts
from vla.rl.update import (UpdateContext, epoch_minibatches, kl_exceeded, minibatch_policy_loss, optimizer_step,
                           recompute_log_prob, update_summary)


def ppo_update(ctx: UpdateContext, rollouts: Rollouts, cfg) -> dict[str, float]:
    """One PPO update; cfg is an RLConfig. Needs ctx.value_head. Returns statistics."""
    if ctx.value_head is None:
        raise ValueError("PPO needs a value head (UpdateContext.value_head)")
    advantages, returns = gae_advantages(ctx, rollouts, cfg)

    def clipped_policy_loss(idx: torch.Tensor):
        new = recompute_log_prob(ctx, rollouts, idx)
        return (*minibatch_policy_loss(ctx, new, advantages[idx], cfg), new)

    return actor_critic_epochs(ctx, rollouts, returns, cfg, clipped_policy_loss)


def gae_advantages(ctx: UpdateContext, rollouts: Rollouts, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-2: rewards per decision, GAE over each trajectory's decisions with the values stored at
    rollout time, advantages normalised over the batch (optional). Returns (advantages, returns)."""
    check_finite("old log-prob", rollouts.log_probs, ctx.iteration)
    check_finite("values", rollouts.values, ctx.iteration)
    rewards = decision_rewards(rollouts, cfg.reward, cfg.env.max_episode_steps)
    advantages, returns = gae(rewards, rollouts.values, rollouts.dones,
                              [t.decisions for t in rollouts.trajectories], cfg.gamma, cfg.gae_lambda)
    if cfg.normalize_advantages and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    check_finite("advantages", advantages, ctx.iteration)
    return advantages, returns


def actor_critic_epochs(ctx: UpdateContext, rollouts: Rollouts, returns: torch.Tensor, cfg,
                        policy_term) -> dict[str, float]:
    """Step 3 for any actor-critic loss: over epochs of shuffled minibatches, policy_term(idx) gives
    (policy loss, its statistics, the recomputed terms with .batch and .encoded), the critic reads the
    same pooled prefix features, value_coef * value loss joins, one optimizer step per accumulation;
    stops early past target_kl. Returns the update's statistics."""
    rows, stopped = [], False
    for mb in epoch_minibatches(torch.arange(len(rollouts)), cfg.epochs, cfg.minibatch_size, ctx.generator,
                                 cfg.grad_accumulation):
        pg_loss, loss_stats, terms = policy_term(mb.idx)
        if kl_exceeded(loss_stats, cfg.target_kl):
            stopped = True
            break
        values = ctx.value_head(*value_inputs(ctx.policy, terms.batch, terms.encoded[0].pooled()))
        v_loss = value_loss(values, returns[mb.idx])
        loss = pg_loss + cfg.value_coef * v_loss
        step = optimizer_step(ctx, loss, cfg.grad_clip, mb)
        rows.append({"policy_loss": float(pg_loss.detach()), "value_loss": float(v_loss.detach()), **step,
                     **loss_stats})
    explained = 1.0 - float((returns - rollouts.values).var() / returns.var().clamp(min=1e-8))
    return {"skipped_update": 0.0, "explained_variance": explained, "return_mean": float(returns.mean()),
            **update_summary(rows, stopped)}

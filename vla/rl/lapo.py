"""LAPO on a latent-reasoning policy (the state policy or the VLA): PPO whose three clipped ratios share one
advantage (docs/ALGORITHMS.md section 5, LaST-R1).

The rollouts sampled each decision's thought (vla/policy/latent_reasoning.py; produced by a GRU cell in
state_flow/reasoning.py, by the prefix stream in flow_vla/reasoning.py): L_max latents, a
length L drawn from p_m = softmax(l_m / beta), and the action chunk conditioned on the first L latents.
They stored the latents, L and log pi_old(end_L) beside the denoising chain (vla/rl/rollout.py).

One update, top to bottom:
1. reward per decision = 1 if its chunk reached success (or the shaped reward, as PPO); GAE(gamma 0.99,
   lambda 0.95) over each trajectory's decisions with the values stored at rollout time; advantages
   normalised over the batch (optional);
2. for each epoch and shuffled minibatch, re-think each observation teacher-forced on its stored latents
   and length, and from that one pass:
   - action:  log r_a = log pi(chain) - log pi_old(chain), the RL core's flow log-prob (section 1) of the
     stored chain, conditioned on the re-thought latents;
   - latent:  log r_z = -(1 / (2 sigma^2)) * sum_{i <= L} ||z_old_i - z_theta_i||^2   (r_z <= 1);
   - length:  log r_end = log pi(end_L) - log pi_old(end_L);
3. each ratio's PPO-clipped surrogate (clip_low, clip_high) with the same advantage; the action and end
   terms averaged over their tokens together (one action token per decision, or one per executed row at
   logprob_level "action"; one end token per decision), + latent_coef * the latent term
   + value_coef * 0.5 * MSE(value, return); optimizer steps as PPO (grad accumulation, target_kl on the
   action ratio).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from vla.config import ConfigError, LapoConfig
from vla.policy.sampling import chain_log_prob
from vla.rl.losses import check_finite, policy_loss
from vla.rl.ppo import actor_critic_epochs, gae_advantages
from vla.rl.rollout import Rollouts
from vla.rl.update import UpdateContext

TRAIN_ONE = ("`vla train --policy.type=state_flow --policy.latent_reasoning=true --dataset=<demos>` (or "
             "--policy.type=flow_vla for the VLA; the warm-up SFT: latents regress future observations, lengths "
             "drawn uniformly)")


def validate_lapo(cfg) -> None:
    """Refuse a bad LAPO config (cfg an RLConfig) before anything loads; messages name the flag."""
    changed = [f"--lapo.{k}" for k, v in vars(cfg.lapo).items() if v != getattr(LapoConfig(), k)]
    if cfg.algo != "lapo":
        if changed:
            raise ConfigError(f"{', '.join(changed)}: LAPO's options; --algo {cfg.algo} does not use them")
        return
    if not cfg.lapo.latent_sigma > 0:
        raise ConfigError(f"--lapo.latent_sigma must be > 0, got {cfg.lapo.latent_sigma}")
    if cfg.lapo.latent_coef < 0:
        raise ConfigError(f"--lapo.latent_coef must be >= 0, got {cfg.lapo.latent_coef}")
    unused = [f"--{k}" for k in ("kl_coef", "anchor_coef") if getattr(cfg, k)]
    unused += ["--surrogate fpo"] if cfg.surrogate == "fpo" else []
    unused += ["--project_out_blind"] if cfg.project_out_blind else []
    if unused:
        raise ConfigError(f"{', '.join(unused)}: not built for --algo lapo (its ratios come from the re-thought "
                          "latents, which the reference policy and the flow surrogate do not see)")


# Algorithms whose update recomputes the rollout's action log-probs through encode_observation, which thinks
# with the evaluation rule's length, not the length the rollout drew: their ratio would not be 1 at the old
# parameters. filtered_bc's update is supervised (no ratio) and runs on a thinking policy.
RATIO_ALGOS = ("grpo", "ppo", "srpo")


def check_lapo_policy(policy, source, algo: str = "lapo") -> None:
    """Refuse a policy that does not think (for LAPO), saying how to train one that does; and a thinking
    policy for an algorithm whose ratios cannot see its sampled thought (RATIO_ALGOS)."""
    thinks = getattr(policy, "reasoner", None) is not None
    if algo != "lapo":
        if thinks and algo in RATIO_ALGOS:
            raise ConfigError(f"--algo {algo} on the latent-reasoning policy at {source}: its rollouts draw a "
                              f"thinking length per chunk, which {algo}'s log-prob recompute does not see (its "
                              "ratios would not be 1 at the rollout's weights); use --algo lapo")
        return
    if not thinks:
        raise ConfigError(f"--algo lapo optimises latent reasoning, and the policy at {source} has none "
                          f"(policy.latent_reasoning is off). Train one with {TRAIN_ONE}, then pass its policy/ "
                          "folder as --policy")


@dataclass
class LapoTerms:
    """A minibatch's three log-ratios under the current weights, and what was computed on the way."""

    action_log_prob: torch.Tensor  # [M] ([M, n_action_steps] at logprob_level "action"), with gradients
    old_action_log_prob: torch.Tensor
    latent_log_ratio: torch.Tensor  # [M] log r_z <= 0, with gradients
    end_log_prob: torch.Tensor  # [M] log pi(end_L), with gradients
    old_end_log_prob: torch.Tensor  # [M]
    batch: dict
    encoded: tuple  # the teacher-forced (condition, velocity features); the value head reads it


def latent_log_ratio(new: torch.Tensor, old: torch.Tensor, lengths: torch.Tensor, sigma: float) -> torch.Tensor:
    """log r_z [M] = -(1 / (2 sigma^2)) * sum over the latents within each row's length of ||old - new||^2."""
    within = torch.arange(new.shape[1], device=new.device)[None] < lengths.to(new.device)[:, None]
    squared = (old.to(new) - new).float().pow(2).sum(-1)  # [M, L_max]
    return -(squared * within).sum(-1) / (2.0 * sigma ** 2)


def lapo_terms(ctx: UpdateContext, rollouts: Rollouts, idx: torch.Tensor, sigma: float) -> LapoTerms:
    """Re-think decisions idx teacher-forced on their stored thoughts and recompute the three log-ratios'
    parts (timed as logprob_s)."""
    start = time.perf_counter()
    r = rollouts.reasoning
    batch = rollouts.observation_batch(idx)
    old_latents, lengths = r["latents"][idx], r["lengths"][idx]
    condition, features = ctx.policy.think(batch, lengths=lengths, latents=old_latents)
    s = ctx.sampling
    per_row = ctx.logprob_level == "action"
    action = chain_log_prob(ctx.policy, batch, rollouts.chains[idx], rollouts.step_masks[idx], s.mode,
                            s.noise_level, ctx.noise_head, ctx.n_action_steps, (condition, features), per_row=per_row)
    thought = condition.reasoning
    latent = latent_log_ratio(thought.latents, old_latents, lengths, sigma)
    end = thought.chosen_log_prob()
    for name, value in (("log-prob (recomputed)", action), ("latent ratio", latent), ("length log-prob", end)):
        check_finite(name, value, ctx.iteration)
    ctx.timings["logprob_s"] += time.perf_counter() - start
    return LapoTerms(action, rollouts.old_log_probs(idx, per_row), latent, end, r["length_log_prob"][idx].to(end),
                     batch, (condition, features))


def lapo_loss(terms: LapoTerms, advantages: torch.Tensor, cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """The three clipped surrogates with one advantage per decision, weighted as released (module docstring)."""
    clip = (cfg.clip_low, cfg.clip_high, cfg.dual_clip)
    action, action_stats = policy_loss(terms.action_log_prob, terms.old_action_log_prob, advantages, *clip)
    end, end_stats = policy_loss(terms.end_log_prob, terms.old_end_log_prob, advantages, *clip)
    latent, latent_stats = policy_loss(terms.latent_log_ratio, torch.zeros_like(terms.latent_log_ratio), advantages,
                                       *clip)
    n_action, n_end = terms.action_log_prob.numel(), terms.end_log_prob.numel()
    loss = (n_action * action + n_end * end) / (n_action + n_end) + cfg.lapo.latent_coef * latent
    stats = {"action_loss": float(action.detach()), "end_loss": float(end.detach()),
             "latent_loss": float(latent.detach()), **action_stats}  # the action ratio's clip_fraction / approx_kl
    for name, part in (("action", action_stats), ("latent", latent_stats), ("end", end_stats)):
        stats[f"clip_fraction_{name}"] = part["clip_fraction"]
        stats[f"ratio_mean_{name}"] = part["ratio_mean"]
    stats["approx_kl_end"] = end_stats["approx_kl"]
    return loss, stats


def thinking_stats(rollouts: Rollouts, candidates) -> dict[str, float]:
    """The chosen-length distribution of the batch and the thinking time per chunk at rollout time."""
    lengths = rollouts.reasoning["lengths"]
    stats = {f"length_share_{n}": float((lengths == n).float().mean()) for n in candidates}
    stats["length_mean"] = float(lengths.float().mean())
    stats["think_ms_per_chunk"] = 1000.0 * float(rollouts.reasoning["think_s"].mean())
    return stats


def lapo_update(ctx: UpdateContext, rollouts: Rollouts, cfg) -> dict[str, float]:
    """One LAPO update; cfg is an RLConfig. Needs ctx.value_head and rollouts of a thinking policy."""
    if ctx.value_head is None:
        raise ValueError("LAPO needs a value head (UpdateContext.value_head)")
    if rollouts.reasoning is None:
        raise ValueError("LAPO needs rollouts of a latent-reasoning policy (Rollouts.reasoning is None)")
    thinking = thinking_stats(rollouts, ctx.policy.reasoner.candidates)
    # 1. GAE over each trajectory's decisions (PPO's)
    check_finite("old length log-prob", rollouts.reasoning["length_log_prob"], ctx.iteration)
    advantages, returns = gae_advantages(ctx, rollouts, cfg)

    # 2-3. three clipped ratios + value loss over minibatches (PPO's epochs)
    def three_ratio_loss(idx: torch.Tensor):
        terms = lapo_terms(ctx, rollouts, idx, cfg.lapo.latent_sigma)
        return (*lapo_loss(terms, advantages[idx], cfg), terms)

    return {**actor_critic_epochs(ctx, rollouts, returns, cfg, three_ratio_loss), **thinking}

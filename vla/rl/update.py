"""Pieces every policy-gradient update shares: minibatches, the log-prob recompute, one optimizer step.

The algorithms (grpo.py, ppo.py, and the latent-space methods built on them)
call these so that each algorithm file reads as its own update, top to bottom.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from vla.policy.sampling import NoiseHead, chain_log_prob, times_of_steps
from vla.rl.distributed import all_reduce_gradients, before_backward, minibatch_mean, shard, split_of
from vla.rl.flow_surrogate import FlowSurrogate
from vla.rl.losses import check_finite, policy_loss
from vla.rl.rollout import Rollouts, SamplingSpec


@dataclass
class UpdateContext:
    """What an update works on; built by the trainer once per iteration."""

    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]  # every trainable parameter (clipped together)
    sampling: SamplingSpec
    iteration: int
    generator: torch.Generator  # minibatch shuffles draw from it (resume reproduces them)
    noise_head: NoiseHead | None = None
    value_head: torch.nn.Module | None = None
    ref_policy: torch.nn.Module | None = None  # frozen initial policy, for the KL term and the anchor
    n_action_steps: int | None = None
    # "chunk": one PPO ratio per decision (log-prob summed over the executed chunk and action dims);
    # "action": one ratio per executed action row (summed over its action dims), the decision's advantage
    # shared by its rows.
    logprob_level: str = "chunk"
    kl_to_ref: bool = False  # recompute the chains' log-probs under ref_policy too (the k3 KL term)
    anchor: bool = False  # compute the velocity anchor to ref_policy
    # surrogate "fpo": the ratio scores the executed chunk by its flow-matching loss at these fixed (t, eps)
    # pairs (vla/rl/flow_surrogate.py) instead of the stochastic step's log-prob.
    flow_surrogate: FlowSurrogate | None = None
    # Remove from each minibatch's policy-loss gradient its component along the gradient of the minibatch's
    # mean (surrogate) log-prob, the "blind" direction (see without_blind_direction).
    project_out_blind: bool = False
    demos: object | None = None  # filtered_bc's DemoFrames (vla/rl/filtered_bc.py), or None
    success_buffer: object | None = None  # filtered_bc's SuccessBuffer, or None (this iteration's successes only)
    progress_reward: object | None = None  # srpo's ProgressReward (vla/rl/srpo/progress.py), or None
    timings: dict[str, float] = field(default_factory=lambda: {"logprob_s": 0.0, "update_s": 0.0})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # honest timings: wait for queued kernels
        torch.cuda.synchronize(device)


def minibatches(indices: torch.Tensor, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffle the decision indices and split them into minibatches of at most `size`."""
    if size < 1:
        raise ValueError(f"minibatch_size must be >= 1, got {size}")
    order = indices[torch.randperm(indices.numel(), generator=generator)]
    return list(order.split(size))


@dataclass
class Minibatch:
    """One minibatch of an epoch, and where it sits in its optimizer step's accumulation group."""

    where: str  # "epoch e, minibatch i", for error messages
    idx: torch.Tensor  # decision indices
    weight: float  # its share of the step's decisions: the step follows their mean gradient
    first: bool  # the first of its group: gradients start from zero
    last: bool  # the last of its group: the optimizer steps after its backward


def epoch_minibatches(decisions: torch.Tensor, epochs: int, size: int, generator: torch.Generator,
                      accumulate: int = 1):
    """Every minibatch of every epoch (each epoch reshuffles when it starts); every `accumulate`
    consecutive minibatches of an epoch (and the epoch's remainder) make one optimizer step.
    Under torch.distributed each process gets its share of every minibatch (vla/rl/distributed.py)."""
    if accumulate < 1:
        raise ValueError(f"grad_accumulation must be >= 1, got {accumulate}")
    for epoch in range(epochs):
        batches = minibatches(decisions, size, generator)
        for start in range(0, len(batches), accumulate):
            group = batches[start:start + accumulate]
            total = sum(idx.numel() for idx in group)
            for j, idx in enumerate(group):
                idx, weight = shard(idx, idx.numel() / total)
                yield Minibatch(f"epoch {epoch}, minibatch {start + j}", idx, weight, j == 0, j == len(group) - 1)


@dataclass
class Recomputed:
    """A minibatch's log-probs under the current weights, and what was computed on the way."""

    log_prob: torch.Tensor  # [M] ([M, n_action_steps] at logprob_level "action"), with gradients
    ref_log_prob: torch.Tensor | None  # the same under the frozen reference policy, or None
    anchor: torch.Tensor | None  # velocity_anchor to the reference policy (scalar), or None
    old_log_prob: torch.Tensor  # the same at rollout time
    batch: dict  # the observation batch
    encoded: tuple  # policy.encode_observation(batch): (PrefixCache, state token); value heads read it


def recompute_log_prob(ctx: UpdateContext, rollouts: Rollouts, idx: torch.Tensor) -> Recomputed:
    """Encode the observations of decisions idx and recompute their chains' log-probs (timed as logprob_s)."""
    start = time.perf_counter()
    batch = rollouts.observation_batch(idx)
    encoded = ctx.policy.encode_observation(batch)
    s = ctx.sampling
    chains, masks = rollouts.chains[idx], rollouts.step_masks[idx]
    per_row = ctx.logprob_level == "action"
    fpo = ctx.flow_surrogate

    def log_prob(policy, policy_encoded):
        if fpo is None:
            return chain_log_prob(policy, batch, chains, masks, s.mode, s.noise_level, ctx.noise_head,
                                  ctx.n_action_steps, policy_encoded, per_row=per_row)
        return fpo.log_prob(policy, policy_encoded, chains[:, -1], idx, per_row)

    logp = log_prob(ctx.policy, encoded)
    logp_ref, anchor = None, None
    if ctx.ref_policy is not None and (ctx.kl_to_ref or ctx.anchor):
        with torch.no_grad():
            ref_encoded = ctx.ref_policy.encode_observation(batch)
            if ctx.kl_to_ref:
                logp_ref = log_prob(ctx.ref_policy, ref_encoded)
        if ctx.anchor:
            anchor = velocity_anchor(ctx.policy, ctx.ref_policy, chains, encoded, ref_encoded, ctx.generator)
            check_finite("velocity anchor", anchor.detach(), ctx.iteration)
    check_finite("log-prob (recomputed)", logp, ctx.iteration)
    _sync(logp.device)
    ctx.timings["logprob_s"] += time.perf_counter() - start
    old = rollouts.old_log_probs(idx, per_row) if fpo is None else fpo.old_log_probs(idx, per_row)
    return Recomputed(logp, logp_ref, anchor, old, batch, encoded)


def velocity_anchor(policy, ref_policy, chains: torch.Tensor, encoded: tuple, ref_encoded: tuple,
                    generator: torch.Generator) -> torch.Tensor:
    """Mean squared gap between policy's and ref_policy's velocities at one uniformly random denoising
    step of each stored chain (its point x_k and time t_k), with gradients to policy.

    The clipped ratio constrains only the velocity at the stochastic step, but the weights are shared
    across flow times and the deployed ODE integrates every step: on Lift, RL runs whose ratios stayed
    within KL 0.03 moved the deployed ODE's actions by 0.13 to 0.19, and by up to 0.64 with early
    stochastic steps (normalised units; the SFT policy's own spread over initial noise is 0.14).
    An unbiased one-step estimate of the flow-matching distance keeps the whole velocity field near
    the reference for one extra velocity evaluation per decision."""
    b, k_steps = chains.shape[0], chains.shape[1] - 1
    offset, total = split_of(b)  # data-parallel: draw the whole minibatch's steps, keep this share's
    steps = torch.randint(0, k_steps, (total,), generator=generator)[offset:offset + b].to(chains.device)
    x = chains[torch.arange(b, device=chains.device), steps]
    t = times_of_steps(steps, k_steps)
    v = policy.velocity(*encoded, x, t)
    with torch.no_grad():
        v_ref = ref_policy.velocity(*ref_encoded, x, t)
    return (v.float() - v_ref.float()).pow(2).mean()


def minibatch_policy_loss(ctx: UpdateContext, new: Recomputed, advantages: torch.Tensor,
                          cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped policy loss of a recomputed minibatch under the run's clip, dual-clip, KL, blind-direction
    and anchor settings (cfg is an RLConfig; advantages are the minibatch's, one per decision)."""
    loss, stats = policy_loss(new.log_prob, new.old_log_prob, advantages, cfg.clip_low, cfg.clip_high,
                              cfg.dual_clip, cfg.kl_coef, new.ref_log_prob)
    if ctx.project_out_blind:
        start = time.perf_counter()  # two backward passes: part of the update's time
        loss, stats["blind_cos"] = without_blind_direction(loss, new.log_prob.mean(), ctx.params)
        ctx.timings["update_s"] += time.perf_counter() - start
    if new.anchor is not None:
        loss = loss + cfg.anchor_coef * new.anchor
        stats["velocity_anchor"] = float(new.anchor.detach())
    return loss, stats


def without_blind_direction(loss: torch.Tensor, mean_log_prob: torch.Tensor,
                            params: list[torch.nn.Parameter]) -> tuple[torch.Tensor, float]:
    """loss with the same value, whose gradient is loss's minus its projection on the gradient d of
    mean_log_prob (the minibatch's mean surrogate log-prob): loss - c (m - m.detach()), c = <g, d> / <d, d>.
    Also returns cos(g, d) before the projection.

    Why: a log-prob's gradient averages to zero over the policy's own actions, FPO's flow-matching
    surrogate's does not, so any net advantage weight in a minibatch (and its clipping) adds a multiple of
    d: "make whatever the policy did more (or less) likely", whatever the reward. On Lift that direction
    dominated the gradients that two halves of a batch agreed on (cosine +0.66 with it), and following
    them without an anchor took the SFT policy from 58% to 26-35%. Without it, the halves still agree at
    +0.25 (benchmarks/rl_gradient_snr.py). Measured since: with the projection the deployed policy drifted
    as far and ended as low (BENCHMARKS.md, stop 13), so it is an option, off by default.
    Costs two extra backward passes per minibatch."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    blind = torch.autograd.grad(mean_log_prob, params, retain_graph=True, allow_unused=True)
    pairs = [(g.double(), d.double()) for g, d in zip(grads, blind) if g is not None and d is not None]
    dot = sum(float((g * d).sum()) for g, d in pairs)
    dd = sum(float(d.pow(2).sum()) for _, d in pairs)
    gg = sum(float(g.pow(2).sum()) for g in grads if g is not None)
    if dd == 0.0 or gg == 0.0:
        return loss, 0.0
    return loss - (dot / dd) * (mean_log_prob - mean_log_prob.detach()), dot / (gg * dd) ** 0.5


def optimizer_step(ctx: UpdateContext, loss: torch.Tensor, grad_clip: float, mb: Minibatch) -> dict[str, float]:
    """Backward (loss weighted by the minibatch's share of its step); on the last minibatch of the
    step, clip and step. Stops (NonFiniteError) before any step if the loss or gradients are not finite.
    Returns {"grad_norm": ...} when it stepped, else {}."""
    start = time.perf_counter()
    check_finite("loss", loss.detach(), ctx.iteration, mb.where)
    if mb.first:
        ctx.optimizer.zero_grad(set_to_none=True)
    before_backward(mb.last)  # FSDP: reduce-scatter only in the step's last backward
    (loss * mb.weight).backward()
    stats = {}
    if mb.last:
        all_reduce_gradients(ctx.params)  # data-parallel: the whole minibatch's gradient, before clipping
        grad_norm = torch.nn.utils.clip_grad_norm_(ctx.params, grad_clip if grad_clip > 0 else float("inf"))
        check_finite("gradient norm", grad_norm.detach(), ctx.iteration, mb.where)
        ctx.optimizer.step()
        stats["grad_norm"] = float(grad_norm)
    _sync(loss.device)
    ctx.timings["update_s"] += time.perf_counter() - start
    return stats


def mean_stats(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average per-minibatch statistics key by key."""
    keys = {k for r in rows for k in r}
    return {k: sum(r[k] for r in rows if k in r) / sum(1 for r in rows if k in r) for k in sorted(keys)}


def kl_exceeded(loss_stats: dict[str, float], target_kl: float) -> bool:
    """True when the minibatch's approximate KL(old || new) is above target_kl (0 = no limit).

    Checked before each optimizer step: with a few hundred decisions per iteration the
    gradient is noisy and Adam turns noise into full-size steps, so without a bound one
    iteration could move the policy far from the one that collected the data."""
    # data-parallel: the whole minibatch's KL (the same number on every process, so all stop together)
    return target_kl > 0 and minibatch_mean(loss_stats["approx_kl"]) > target_kl


def update_summary(rows: list[dict[str, float]], stopped_early: bool) -> dict[str, float]:
    """Per-minibatch statistics averaged, plus how many optimizer steps ran (the rows with a grad_norm)
    and whether target_kl stopped them."""
    steps = sum(1 for r in rows if "grad_norm" in r)
    return {**mean_stats(rows), "optimizer_steps": float(steps), "kl_stopped": float(stopped_early)}

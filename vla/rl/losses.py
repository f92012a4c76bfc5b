"""Losses shared by the RL algorithms, and the finiteness checks that guard every update.

The clipped policy loss is :func:`vla.kernels.clipped_policy_loss` (one
implementation: fused on GPU, torch reference on CPU); this module only maps
the config's conventions onto it (dual_clip 0 = off).
"""

from __future__ import annotations

import torch

from vla.errors import UserError
from vla.kernels import clipped_policy_loss


class NonFiniteError(UserError, FloatingPointError):
    """NaN or Inf in a quantity an update depends on; the update stops before touching the weights."""


def check_finite(name: str, value: torch.Tensor, iteration: int, where: str = "") -> None:
    """Raise NonFiniteError naming the quantity and the iteration if value has NaN or Inf."""
    if not bool(torch.isfinite(value).all()):
        bad = value[~torch.isfinite(value)]
        kinds = sorted({"NaN" if bool(torch.isnan(x)) else "Inf" for x in bad.flatten()[:100]})
        place = f" ({where})" if where else ""
        raise NonFiniteError(f"{name} has {'/'.join(kinds)} at iteration {iteration}{place}; "
                             f"{bad.numel()} of {value.numel()} values are not finite")


def policy_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip_low: float,
                clip_high: float, dual_clip: float = 0.0, kl_coef: float = 0.0,
                logp_ref: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO/GRPO clipped loss, mean over decisions: -E[min(r A, clip(r, 1 - lo, 1 + hi) A)] (+ k3 KL).

    dual_clip > 1 bounds the loss of negative-advantage decisions by -dual_clip * A; 0 turns it off.
    Log-probs [M] give one ratio per decision; [M, R] one ratio per executed action row, each row
    taking its decision's advantage (advantages stay [M]) and the mean running over all M * R terms.
    Returns the loss and float statistics (clip_fraction, approx_kl, ratio_mean, ...)."""
    if logp_new.dim() == 2:
        advantages = advantages.reshape(-1, 1).expand(logp_new.shape)
        logp_new, logp_old, advantages = logp_new.reshape(-1), logp_old.reshape(-1), advantages.reshape(-1)
        logp_ref = None if logp_ref is None else logp_ref.reshape(-1)
    loss, stats = clipped_policy_loss(logp_new, logp_old.to(logp_new), advantages.to(logp_new), clip_low=clip_low,
                                      clip_high=clip_high, dual_clip=dual_clip if dual_clip > 0 else None,
                                      kl_coef=kl_coef, logp_ref=logp_ref)
    return loss, {k: float(v) for k, v in stats.items()}


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """0.5 * mean squared error of the critic."""
    return 0.5 * (values.float() - returns.to(values.device).float()).pow(2).mean()

"""Clipped PPO / GRPO policy loss from log-probs (docs/ALGORITHMS.md section 2).

Per element i (one log-prob: a decision step, already summed over action dims
and chunk as the caller chooses), with r = exp(logp_new - logp_old):

    pg1  = -A * r
    pg2  = -A * clamp(r, 1 - clip_low, 1 + clip_high)
    pg   = max(pg1, pg2)
    pg   = min(pg, -A * dual_clip)     where A < 0, if dual_clip is set (c > 1)
    kl   = exp(d) - d - 1,  d = logp_ref - logp_new      (k3 estimator of KL(new || ref))
    loss = sum_i valid_i * (pg_i + kl_coef * kl_i) / max(#valid, 1)

Statistics (means over valid elements, detached 0-dim float32 tensors, no
host sync): ``clip_fraction`` (pg2 > pg1: the clipped term was active),
``approx_kl`` (k3 estimate of KL(old || new): mean(r - 1 - log r)),
``ratio_mean``; with dual_clip also ``dual_clip_fraction`` (A < 0 and the dual
bound was active); with logp_ref also ``kl_ref`` (mean of kl).
Gradients flow to logp_new only.
"""

from __future__ import annotations

import functools

import torch

from . import dispatch
from .dispatch import HAS_TRITON, tl, triton



def _prepare(logp_new, logp_old, advantages, clip_low, clip_high, dual_clip, kl_coef, logp_ref, mask):
    dispatch.check_float("logp_new", logp_new)
    shape = logp_new.shape
    out = []
    for name, t in (("logp_old", logp_old), ("advantages", advantages), ("logp_ref", logp_ref)):
        if t is None and name == "logp_ref":
            out.append(None)
            continue
        dispatch.check_float(name, t)
        if t.device != logp_new.device:
            raise ValueError(f"{name} is on {t.device}, expected {logp_new.device} like logp_new")
        try:
            out.append(torch.broadcast_to(t, shape))
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to "
                             f"logp_new's {tuple(shape)}") from None
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask must be a bool tensor (True = valid)")
        if mask.device != logp_new.device:
            raise ValueError(f"mask is on {mask.device}, expected {logp_new.device} like logp_new")
        try:
            mask = torch.broadcast_to(mask, shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to {tuple(shape)}") from None
    if not (0.0 <= clip_low < 1.0) or clip_high < 0.0:
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if kl_coef > 0 and logp_ref is None:
        raise ValueError("kl_coef > 0 needs logp_ref (the reference policy's log-probs)")
    old, adv, ref = out
    return old, adv, ref, mask


def _loss_torch(new, old, adv, ref, mask, clip_low, clip_high, dual_clip, kl_coef):
    cdt = dispatch.torch_compute_dtype(new)
    new, old, adv = new.to(cdt), old.to(cdt), adv.to(cdt)
    valid = torch.ones_like(new) if mask is None else mask.to(cdt)
    count = valid.sum().clamp(min=1)
    log_ratio = new - old
    ratio = torch.exp(log_ratio)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(pg1, pg2)
    stats = {"clip_fraction": ((pg2 > pg1).to(cdt) * valid).sum() / count}
    if dual_clip is not None:
        pg3 = -adv * dual_clip
        negative = adv < 0
        stats["dual_clip_fraction"] = ((negative & (pg > pg3)).to(cdt) * valid).sum() / count
        pg = torch.where(negative, torch.minimum(pg, pg3), pg)
    per = pg
    if ref is not None:
        d = ref.to(cdt) - new
        kl = torch.exp(d) - d - 1.0
        stats["kl_ref"] = (kl * valid).sum() / count
        if kl_coef > 0:
            per = pg + kl_coef * kl
    loss = (per * valid).sum() / count
    with torch.no_grad():
        stats["approx_kl"] = ((ratio - 1.0 - log_ratio) * valid).sum() / count
        stats["ratio_mean"] = (ratio * valid).sum() / count
    return loss, {k: v.detach().float() for k, v in stats.items()}


def clipped_policy_loss_reference(logp_new, logp_old, advantages, clip_low=0.2, clip_high=0.28, dual_clip=None,
                                  kl_coef=0.0, logp_ref=None, mask=None):
    """Pure-torch :func:`clipped_policy_loss` (differentiable by autograd)."""
    old, adv, ref, mask = _prepare(logp_new, logp_old, advantages, clip_low, clip_high, dual_clip, kl_coef,
                                   logp_ref, mask)
    return _loss_torch(logp_new, old, adv, ref, mask, clip_low, clip_high, dual_clip, kl_coef)


if HAS_TRITON:

    @triton.jit
    def _elementwise(new, old, adv, ref, param_ptr, HAS_DUAL: tl.constexpr, HAS_REF: tl.constexpr,
                     CDT: tl.constexpr):
        """Per-element loss, d loss / d new, and the statistics' indicators."""
        # Parameters come from memory in the compute dtype: float scalar arguments
        # would be rounded to float32 (0.2 is not exact), which float64 must avoid.
        lo = tl.load(param_ptr + 0).to(CDT)
        hi = tl.load(param_ptr + 1).to(CDT)
        dual_clip = tl.load(param_ptr + 2).to(CDT)
        kl_coef = tl.load(param_ptr + 3).to(CDT)
        log_ratio = new - old
        ratio = tl.exp(log_ratio)
        pg1 = -adv * ratio
        pg2 = -adv * tl.minimum(tl.maximum(ratio, lo), hi)
        clipped = pg2 > pg1
        pg = tl.where(clipped, pg2, pg1)
        inside = (ratio >= lo) & (ratio <= hi)
        dpg = tl.where(clipped & ~inside, 0.0, -adv * ratio)
        dual_hit = tl.zeros_like(ratio) > 1.0  # all False
        if HAS_DUAL:
            pg3 = -adv * dual_clip
            dual_hit = (adv < 0) & (pg > pg3)
            pg = tl.where(dual_hit, pg3, pg)
            dpg = tl.where(dual_hit, 0.0, dpg)
        kl = tl.zeros_like(pg)
        if HAS_REF:
            d = ref - new
            ed = tl.exp(d)
            kl = ed - d - 1.0
            pg = pg + kl_coef * kl
            dpg = dpg + kl_coef * (1.0 - ed)
        approx_kl = ratio - 1.0 - log_ratio
        return pg, dpg, clipped, dual_hit, kl, approx_kl, ratio

    @triton.jit
    def _ppo_fwd(new_ptr, old_ptr, adv_ptr, ref_ptr, keep_ptr, param_ptr, part_ptr, N,
                 HAS_DUAL: tl.constexpr, HAS_REF: tl.constexpr, HAS_MASK: tl.constexpr, CDT: tl.constexpr,
                 BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        if HAS_MASK:
            m = m & (tl.load(keep_ptr + offs, mask=offs < N, other=0) != 0)
        new = tl.load(new_ptr + offs, mask=m, other=0.0).to(CDT)
        old = tl.load(old_ptr + offs, mask=m, other=0.0).to(CDT)
        adv = tl.load(adv_ptr + offs, mask=m, other=0.0).to(CDT)
        ref = new
        if HAS_REF:
            ref = tl.load(ref_ptr + offs, mask=m, other=0.0).to(CDT)
        pg, _, clipped, dual_hit, kl, approx_kl, ratio = _elementwise(new, old, adv, ref, param_ptr,
                                                                      HAS_DUAL, HAS_REF, CDT)
        # One row of 7 partial sums per program: loss, clipped, approx_kl, ratio, dual, kl_ref, count.
        base = part_ptr + pid * 7
        tl.store(base + 0, tl.sum(tl.where(m, pg, 0.0), axis=0))
        tl.store(base + 1, tl.sum(tl.where(m & clipped, 1.0, 0.0).to(CDT), axis=0))
        tl.store(base + 2, tl.sum(tl.where(m, approx_kl, 0.0), axis=0))
        tl.store(base + 3, tl.sum(tl.where(m, ratio, 0.0), axis=0))
        tl.store(base + 4, tl.sum(tl.where(m & dual_hit, 1.0, 0.0).to(CDT), axis=0))
        tl.store(base + 5, tl.sum(tl.where(m, kl, 0.0), axis=0))
        tl.store(base + 6, tl.sum(tl.where(m, 1.0, 0.0).to(CDT), axis=0))

    @triton.jit
    def _ppo_bwd(new_ptr, old_ptr, adv_ptr, ref_ptr, keep_ptr, param_ptr, scale_ptr, grad_ptr, N,
                 HAS_DUAL: tl.constexpr, HAS_REF: tl.constexpr, HAS_MASK: tl.constexpr, CDT: tl.constexpr,
                 BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inb = offs < N
        m = inb
        if HAS_MASK:
            m = m & (tl.load(keep_ptr + offs, mask=inb, other=0) != 0)
        new = tl.load(new_ptr + offs, mask=m, other=0.0).to(CDT)
        old = tl.load(old_ptr + offs, mask=m, other=0.0).to(CDT)
        adv = tl.load(adv_ptr + offs, mask=m, other=0.0).to(CDT)
        ref = new
        if HAS_REF:
            ref = tl.load(ref_ptr + offs, mask=m, other=0.0).to(CDT)
        _, dpg, _, _, _, _, _ = _elementwise(new, old, adv, ref, param_ptr, HAS_DUAL, HAS_REF, CDT)
        scale = tl.load(scale_ptr).to(CDT)  # upstream grad / #valid
        tl.store(grad_ptr + offs, tl.where(m, dpg * scale, 0.0).to(grad_ptr.dtype.element_ty), mask=inb)


@functools.lru_cache(maxsize=32)
def _params(scalars: tuple[float, float, float, float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(1 - clip_low, 1 + clip_high, dual_clip, kl_coef) on the device, cached: no copy per call."""
    clip_low, clip_high, dual_clip, kl_coef = scalars
    return torch.tensor([1.0 - clip_low, 1.0 + clip_high, dual_clip, kl_coef], dtype=dtype, device=device)


class _PolicyLoss(torch.autograd.Function):
    """loss = totals[0] / count with the kernel backward w.r.t. logp_new."""

    @staticmethod
    def forward(ctx, new, old, adv, ref, keep, clip_low, clip_high, dual_clip, kl_coef):
        n = new.numel()
        block = dispatch.flat_block(n)
        grid = triton.cdiv(n, block)
        cdt = dispatch.torch_compute_dtype(new)
        partial = torch.empty(grid, 7, dtype=cdt, device=new.device)
        keep_arg = new if keep is None else keep.view(torch.uint8)
        ref_arg = new if ref is None else ref
        flags = dict(HAS_DUAL=dual_clip is not None, HAS_REF=ref is not None, HAS_MASK=keep is not None,
                     CDT=dispatch.compute_dtype(new), BLOCK=block)
        scalars = (float(clip_low), float(clip_high), float(dual_clip or 0.0), float(kl_coef))
        params = _params(scalars, cdt, new.device)
        with dispatch.device_guard(new):
            _ppo_fwd[(grid,)](new, old, adv, ref_arg, keep_arg, params, partial, n, **flags)
        totals = partial.sum(0)
        count = totals[6].clamp(min=1)
        stats = (totals / count).detach()
        ctx.save_for_backward(new, old, adv, ref_arg, keep_arg, params, count)
        ctx.flags, ctx.scalars, ctx.ref_given, ctx.keep_given = flags, scalars, ref is not None, keep is not None
        ctx.mark_non_differentiable(stats)
        return stats[0].clone(), stats

    @staticmethod
    def backward(ctx, g_loss, _g_stats):
        new, old, adv, ref_arg, keep_arg, params, count = ctx.saved_tensors
        if g_loss is None or not ctx.needs_input_grad[0]:
            return (None,) * 9

        def kernel():
            grad = torch.empty_like(new)
            scale = (g_loss / count).reshape(1).contiguous()
            block = ctx.flags["BLOCK"]
            with dispatch.device_guard(new):
                _ppo_bwd[(triton.cdiv(new.numel(), block),)](new, old, adv, ref_arg, keep_arg, params, scale, grad,
                                                             new.numel(), **ctx.flags)
            return (grad,)

        def fallback():
            clip_low, clip_high, dual, kl_coef = ctx.scalars
            ref = ref_arg if ctx.ref_given else None
            keep = keep_arg.bool() if ctx.keep_given else None
            return dispatch.reference_grads(
                lambda n_: _loss_torch(n_, old, adv, ref, keep, clip_low, clip_high,
                                       dual if ctx.flags["HAS_DUAL"] else None, kl_coef)[0],
                (new,), (g_loss,), (True,))

        return dispatch.backward("clipped_policy_loss", kernel, fallback) + (None,) * 8


def _loss_triton(new, old, adv, ref, mask, clip_low, clip_high, dual_clip, kl_coef):
    flat = [t.reshape(-1).contiguous() if t is not None else None for t in (new, old, adv, ref)]
    keep = None if mask is None else mask.reshape(-1).contiguous()
    loss, stats = _PolicyLoss.apply(*flat, keep, clip_low, clip_high, dual_clip, kl_coef)
    out = {"clip_fraction": stats[1], "approx_kl": stats[2], "ratio_mean": stats[3]}
    if dual_clip is not None:
        out["dual_clip_fraction"] = stats[4]
    if ref is not None:
        out["kl_ref"] = stats[5]
    return loss, {k: v.float() for k, v in out.items()}


def clipped_policy_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                        clip_low: float = 0.2, clip_high: float = 0.28, dual_clip: float | None = None,
                        kl_coef: float = 0.0, logp_ref: torch.Tensor | None = None,
                        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped policy-gradient loss and its statistics (module docstring).

    Args:
        logp_new: log-probs under the current policy, any shape [...] (e.g. [B, T]).
        logp_old: log-probs at rollout time; advantages: A; logp_ref: reference
            policy log-probs (needed when kl_coef > 0). Each broadcastable to logp_new
            (e.g. advantages [B, 1] over steps).
        clip_low, clip_high: ratio clipped to [1 - clip_low, 1 + clip_high].
        dual_clip: c > 1 bounds the loss of A < 0 elements by -c * A; None = off.
        kl_coef: weight of the k3 KL to the reference.
        mask: bool broadcastable to logp_new, True = valid element.
    Returns:
        (loss, stats): the scalar loss (float32, float64 for float64 logp_new),
        differentiable w.r.t. logp_new only; stats a dict of detached 0-dim
        float32 tensors (see the module docstring).
    """
    old, adv, ref, mask = _prepare(logp_new, logp_old, advantages, clip_low, clip_high, dual_clip, kl_coef,
                                   logp_ref, mask)
    if dispatch.needs_grad(old, adv, ref):  # gradients to anything but logp_new: the reference has them
        return _loss_torch(logp_new, old, adv, ref, mask, clip_low, clip_high, dual_clip, kl_coef)
    return dispatch.call("clipped_policy_loss", _loss_triton, _loss_torch, (logp_new, old, adv, ref),
                         logp_new, old, adv, ref, mask, clip_low, clip_high, dual_clip, kl_coef)


def clipped_policy_loss_triton(logp_new, logp_old, advantages, clip_low=0.2, clip_high=0.28, dual_clip=None,
                               kl_coef=0.0, logp_ref=None, mask=None):
    """:func:`clipped_policy_loss` forced through the Triton kernels (tests, benchmarks)."""
    old, adv, ref, mask = _prepare(logp_new, logp_old, advantages, clip_low, clip_high, dual_clip, kl_coef,
                                   logp_ref, mask)
    return _loss_triton(logp_new, old, adv, ref, mask, clip_low, clip_high, dual_clip, kl_coef)

"""Diagonal Gaussian log-prob of a stored denoising step, summed over the action dim.

    log_prob[row] = sum_a log N(x_next[row, a]; mu[row, a], std[row, a]^2)
                  = sum_a -0.5 z^2 - log std - 0.5 log(2 pi),   z = (x_next - mu) / std

Elements with std = 0 (deterministic ODE steps) contribute 0 and get zero
gradients; rows where ``mask`` is False give 0. Used for the RL log-prob
recompute when mu and std come from torch code (Flow-Noise: std from a learned
noise head); for the Flow-SDE see :func:`vla.kernels.flow_sde_log_prob`, which
also fuses the mean.
"""

from __future__ import annotations

import math

import torch

from . import dispatch
from .dispatch import HAS_TRITON, tl, triton

LOG_2PI = math.log(2.0 * math.pi)


def _prepare(x_next: torch.Tensor, mu: torch.Tensor, std: torch.Tensor, mask: torch.Tensor | None):
    dispatch.check_float("x_next", x_next)
    if x_next.dim() < 1:
        raise ValueError("x_next must have at least one dim (the action dim)")
    dispatch.check_same("mu", mu, "x_next", x_next)
    dispatch.check_float("std", std)
    if std.dtype != x_next.dtype or std.device != x_next.device:
        raise TypeError(f"std must have x_next's dtype and device ({x_next.dtype}, {x_next.device}), "
                        f"got ({std.dtype}, {std.device})")
    try:
        broadcast = torch.broadcast_shapes(std.shape, x_next.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != x_next.shape:
        raise ValueError(f"std of shape {tuple(std.shape)} does not broadcast to x_next's {tuple(x_next.shape)}")
    keep = dispatch.row_mask("mask", mask, x_next.shape[:-1], x_next.device)
    return keep


def _log_prob_torch(x_next, mu, std, keep):
    cdt = dispatch.torch_compute_dtype(x_next)
    xf, mf, sf = x_next.to(cdt), mu.to(cdt), std.to(cdt)
    pos = sf > 0
    safe = torch.where(pos, sf, torch.ones_like(sf))
    z = (xf - mf) / safe
    terms = torch.where(pos, -0.5 * z * z - torch.log(safe) - 0.5 * LOG_2PI, torch.zeros_like(z))
    lp = terms.sum(-1)
    if keep is not None:
        lp = torch.where(keep.reshape(lp.shape), lp, torch.zeros_like(lp))
    return lp


def flow_gaussian_log_prob_reference(x_next, mu, std, mask=None):
    """Pure-torch :func:`flow_gaussian_log_prob` (differentiable by autograd)."""
    return _log_prob_torch(x_next, mu, std, _prepare(x_next, mu, std, mask))


if HAS_TRITON:

    @triton.jit
    def _load_std(std_ptr, rows, offs, m, STD_PER_ROW: tl.constexpr, CDT: tl.constexpr):
        if STD_PER_ROW:
            s = tl.load(std_ptr + rows).to(CDT)[:, None]  # rows are clamped in-bounds by the caller
        else:
            s = tl.load(std_ptr + offs, mask=m, other=1.0).to(CDT)
        return s

    @triton.jit
    def _gauss_lp_fwd(x_ptr, mu_ptr, std_ptr, keep_ptr, lp_ptr, N, A,
                      STD_PER_ROW: tl.constexpr, HAS_MASK: tl.constexpr, CDT: tl.constexpr,
                      BLOCK_R: tl.constexpr, BLOCK_A: tl.constexpr):
        LOG_2PI_C: tl.constexpr = 1.8378770664093453
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        safe_rows = tl.where(rmask, rows, 0)
        acc = tl.zeros([BLOCK_R], dtype=CDT)
        for a0 in range(0, A, BLOCK_A):
            cols = a0 + tl.arange(0, BLOCK_A)
            m = rmask[:, None] & (cols[None, :] < A)
            offs = rows[:, None] * A + cols[None, :]
            x = tl.load(x_ptr + offs, mask=m, other=0.0).to(CDT)
            mu = tl.load(mu_ptr + offs, mask=m, other=0.0).to(CDT)
            s = _load_std(std_ptr, safe_rows, offs, m, STD_PER_ROW, CDT)
            pos = s > 0
            safe = tl.where(pos, s, 1.0)
            z = (x - mu) / safe
            term = -0.5 * z * z - tl.log(safe) - 0.5 * LOG_2PI_C
            acc += tl.sum(tl.where(m & pos, term, 0.0), axis=1)
        if HAS_MASK:
            acc = tl.where(tl.load(keep_ptr + rows, mask=rmask, other=0) != 0, acc, 0.0)
        tl.store(lp_ptr + rows, acc, mask=rmask)

    @triton.jit
    def _gauss_lp_bwd(x_ptr, mu_ptr, std_ptr, keep_ptr, g_ptr, gx_ptr, gmu_ptr, gstd_ptr, N, A,
                      STD_PER_ROW: tl.constexpr, HAS_MASK: tl.constexpr, NEED_X: tl.constexpr,
                      NEED_MU: tl.constexpr, NEED_STD: tl.constexpr, CDT: tl.constexpr,
                      BLOCK_R: tl.constexpr, BLOCK_A: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        safe_rows = tl.where(rmask, rows, 0)
        g = tl.load(g_ptr + rows, mask=rmask, other=0.0).to(CDT)
        if HAS_MASK:
            g = tl.where(tl.load(keep_ptr + rows, mask=rmask, other=0) != 0, g, 0.0)
        gstd_row = tl.zeros([BLOCK_R], dtype=CDT)
        for a0 in range(0, A, BLOCK_A):
            cols = a0 + tl.arange(0, BLOCK_A)
            m = rmask[:, None] & (cols[None, :] < A)
            offs = rows[:, None] * A + cols[None, :]
            x = tl.load(x_ptr + offs, mask=m, other=0.0).to(CDT)
            mu = tl.load(mu_ptr + offs, mask=m, other=0.0).to(CDT)
            s = _load_std(std_ptr, safe_rows, offs, m, STD_PER_ROW, CDT)
            pos = (s > 0) & m
            safe = tl.where(pos, s, 1.0)
            z = (x - mu) / safe
            gz = tl.where(pos, g[:, None] * z / safe, 0.0)  # d lp / d mu
            if NEED_X:
                tl.store(gx_ptr + offs, (-gz).to(gx_ptr.dtype.element_ty), mask=m)
            if NEED_MU:
                tl.store(gmu_ptr + offs, gz.to(gmu_ptr.dtype.element_ty), mask=m)
            if NEED_STD:
                gs = tl.where(pos, g[:, None] * (z * z - 1.0) / safe, 0.0)
                if STD_PER_ROW:
                    gstd_row += tl.sum(gs, axis=1)
                else:
                    tl.store(gstd_ptr + offs, gs.to(gstd_ptr.dtype.element_ty), mask=m)
        if NEED_STD:
            if STD_PER_ROW:
                tl.store(gstd_ptr + rows, gstd_row.to(gstd_ptr.dtype.element_ty), mask=rmask)


def _mask_arg(keep, fallback):
    return (fallback, False) if keep is None else (keep.contiguous().view(torch.uint8), True)


class _GaussianLogProb(torch.autograd.Function):
    """[N, A] x_next and mu; std [N] (per row) or [N, A]; returns [N]."""

    @staticmethod
    def forward(ctx, x, mu, std, keep):
        n, a_dim = x.shape
        cdt = dispatch.torch_compute_dtype(x)
        lp = torch.empty(n, dtype=cdt, device=x.device)
        keep_arg, has_mask = _mask_arg(keep, lp)
        per_row = std.dim() == 1
        block_r, block_a = dispatch.row_blocks(n, a_dim)
        with dispatch.device_guard(x):
            _gauss_lp_fwd[(triton.cdiv(n, block_r),)](
                x, mu, std, keep_arg, lp, n, a_dim, STD_PER_ROW=per_row, HAS_MASK=has_mask,
                CDT=dispatch.compute_dtype(x), BLOCK_R=block_r, BLOCK_A=block_a)
        ctx.save_for_backward(x, mu, std, keep_arg)
        ctx.has_mask = has_mask
        return lp

    @staticmethod
    def backward(ctx, g):
        x, mu, std, keep_arg = ctx.saved_tensors
        need_x, need_mu, need_std = ctx.needs_input_grad[:3]
        per_row = std.dim() == 1

        def kernel():
            n, a_dim = x.shape
            gx = torch.empty_like(x) if need_x else x
            gmu = torch.empty_like(mu) if need_mu else x
            gstd = torch.empty_like(std) if need_std else x
            block_r, block_a = dispatch.row_blocks(n, a_dim)
            with dispatch.device_guard(x):
                _gauss_lp_bwd[(triton.cdiv(n, block_r),)](
                    x, mu, std, keep_arg, g.contiguous(), gx, gmu, gstd, n, a_dim,
                    STD_PER_ROW=per_row, HAS_MASK=ctx.has_mask, NEED_X=need_x, NEED_MU=need_mu,
                    NEED_STD=need_std, CDT=dispatch.compute_dtype(x), BLOCK_R=block_r, BLOCK_A=block_a)
            return gx if need_x else None, gmu if need_mu else None, gstd if need_std else None

        keep = keep_arg.bool() if ctx.has_mask else None

        def reference(x_, mu_, std_):
            return _log_prob_torch(x_, mu_, std_[:, None] if per_row else std_, keep)

        grads = dispatch.backward("flow_gaussian_log_prob", kernel, lambda: dispatch.reference_grads(
            reference, (x, mu, std), (g,), (need_x, need_mu, need_std)))
        return grads + (None,)


def _log_prob_triton(x_next, mu, std, keep):
    a_dim = x_next.shape[-1]
    rows = x_next.shape[:-1]
    if std.shape[-1] == 1 and x_next.dim() == std.dim():
        # Per-row std (the Flow-SDE case): keep it [N]; autograd sums the grad back to std's shape.
        std_k = std.expand(rows + (1,)).reshape(-1).contiguous()
    else:
        std_k = std.expand(x_next.shape).reshape(-1, a_dim).contiguous()
    lp = _GaussianLogProb.apply(x_next.reshape(-1, a_dim).contiguous(), mu.reshape(-1, a_dim).contiguous(),
                                std_k, keep)
    return lp.reshape(rows)


def flow_gaussian_log_prob(x_next: torch.Tensor, mu: torch.Tensor, std: torch.Tensor,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the last dim of log N(x_next; mu, std^2).

    Args:
        x_next: samples [..., A] (e.g. [B, H, A]).
        mu: means, same shape and dtype as x_next.
        std: standard deviations broadcastable to x_next (e.g. [B, H, 1] per row as
            returned by flow_sde_step, or [B, H, A] per element); same dtype.
            Elements with std = 0 contribute 0 (and zero gradients).
        mask: optional bool of shape x_next.shape[:-1] or [B]; False rows give 0.

    Returns:
        log_prob of shape x_next.shape[:-1], float32 (float64 for float64 inputs),
        differentiable w.r.t. x_next, mu and std.
    """
    keep = _prepare(x_next, mu, std, mask)
    return dispatch.call("flow_gaussian_log_prob", _log_prob_triton, _log_prob_torch, (x_next, mu, std),
                         x_next, mu, std, keep)


def flow_gaussian_log_prob_triton(x_next, mu, std, mask=None):
    """:func:`flow_gaussian_log_prob` forced through the Triton kernels (tests, benchmarks)."""
    return _log_prob_triton(x_next, mu, std, _prepare(x_next, mu, std, mask))

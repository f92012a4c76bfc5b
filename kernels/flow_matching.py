"""Flow-matching SFT: the noisy interpolant and the masked velocity MSE.

    x_t  = t * noise + (1 - t) * actions           (openpi: t = 1 is noise)
    u    = noise - actions                         (target velocity)
    loss = sum_{valid rows} mean_a (v_pred - u)^2  /  max(#valid rows, 1)

A row is one chunk step [b, h]; ``mask`` (True = valid, unpadded) excludes
padded steps. With no valid row the loss is 0. The fused loss never
materialises u or the squared error, and its backward recomputes them instead
of saving them.
"""

from __future__ import annotations

import torch

from . import dispatch
from .dispatch import HAS_TRITON, tl, triton


# ------------------------------------------------------------------ interpolate
def _interp_prepare(actions, noise, t):
    dispatch.check_float("actions", actions)
    if actions.dim() < 2:
        raise ValueError(f"actions must have shape [B, ..., A], got {tuple(actions.shape)}")
    dispatch.check_same("noise", noise, "actions", actions)
    return dispatch.per_batch("t", t, actions.shape[0], actions, dispatch.torch_compute_dtype(actions))


def _interp_torch(actions, noise, tb):
    shape = (actions.shape[0],) + (1,) * (actions.dim() - 1)
    tt = tb.view(shape)
    return (tt * noise.to(tb.dtype) + (1.0 - tt) * actions.to(tb.dtype)).to(actions.dtype)


if HAS_TRITON:

    @triton.jit
    def _interp_kernel(a_ptr, n_ptr, t_ptr, out_ptr, numel, per_batch, CDT: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < numel
        t = tl.load(t_ptr + offs // per_batch, mask=m, other=0.0).to(CDT)
        a = tl.load(a_ptr + offs, mask=m, other=0.0).to(CDT)
        n = tl.load(n_ptr + offs, mask=m, other=0.0).to(CDT)
        tl.store(out_ptr + offs, (t * n + (1.0 - t) * a).to(out_ptr.dtype.element_ty), mask=m)


def _interp_triton(actions, noise, tb):
    a, n = actions.contiguous(), noise.contiguous()
    out = torch.empty_like(a)
    block = dispatch.flat_block(a.numel())
    with dispatch.device_guard(a):
        _interp_kernel[(triton.cdiv(a.numel(), block),)](
            a, n, tb, out, a.numel(), a.numel() // a.shape[0], CDT=dispatch.compute_dtype(a), BLOCK=block)
    return out


def flow_interpolate(actions: torch.Tensor, noise: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """x_t = t * noise + (1 - t) * actions, t per batch row.

    Args:
        actions, noise: [B, ..., A], same shape and dtype.
        t: float or [B] tensor of flow times in [0, 1].
    Returns: x_t like actions. Gradients (rarely needed: both inputs are data)
    come from the torch reference, which runs whenever an input requires grad.
    """
    tb = _interp_prepare(actions, noise, t)
    if dispatch.needs_grad(actions, noise, t):
        return _interp_torch(actions, noise, tb)  # tb keeps t's autograd history
    return dispatch.call("flow_interpolate", _interp_triton, _interp_torch, (actions, noise), actions, noise, tb)


def flow_interpolate_reference(actions, noise, t):
    """Pure-torch :func:`flow_interpolate`."""
    return _interp_torch(actions, noise, _interp_prepare(actions, noise, t))


def flow_interpolate_triton(actions, noise, t):
    """:func:`flow_interpolate` forced through the Triton kernel (tests, benchmarks)."""
    return _interp_triton(actions, noise, _interp_prepare(actions, noise, t))


# ------------------------------------------------------------------ loss
def _loss_prepare(v_pred, actions, noise, mask):
    dispatch.check_float("v_pred", v_pred)
    if v_pred.dim() < 2:
        raise ValueError(f"v_pred must have shape [B, ..., A], got {tuple(v_pred.shape)}")
    for name, u in (("actions", actions), ("noise", noise)):
        dispatch.check_float(name, u)
        if u.shape != v_pred.shape or u.device != v_pred.device:
            raise ValueError(f"{name} must match v_pred's shape {tuple(v_pred.shape)} and device, "
                             f"got {tuple(u.shape)} on {u.device}")
    return dispatch.row_mask("mask", mask, v_pred.shape[:-1], v_pred.device)


def _loss_torch(v_pred, actions, noise, keep):
    cdt = dispatch.torch_compute_dtype(v_pred)
    per_row = (v_pred.to(cdt) - (noise.to(cdt) - actions.to(cdt))).pow(2).mean(-1).reshape(-1)
    if keep is None:
        return per_row.mean()
    return (per_row * keep).sum() / keep.sum().clamp(min=1)


def flow_matching_loss_reference(v_pred, actions, noise, mask=None):
    """Pure-torch :func:`flow_matching_loss` (differentiable by autograd)."""
    return _loss_torch(v_pred, actions, noise, _loss_prepare(v_pred, actions, noise, mask))


if HAS_TRITON:

    @triton.jit
    def _fm_loss_fwd(v_ptr, a_ptr, n_ptr, keep_ptr, part_ptr, N, A, HAS_MASK: tl.constexpr, CDT: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_A: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        if HAS_MASK:
            rmask = rmask & (tl.load(keep_ptr + rows, mask=rows < N, other=0) != 0)
        acc = tl.zeros([BLOCK_R], dtype=CDT)
        for a0 in range(0, A, BLOCK_A):
            cols = a0 + tl.arange(0, BLOCK_A)
            m = rmask[:, None] & (cols[None, :] < A)
            offs = rows[:, None] * A + cols[None, :]
            v = tl.load(v_ptr + offs, mask=m, other=0.0).to(CDT)
            a = tl.load(a_ptr + offs, mask=m, other=0.0).to(CDT)
            n = tl.load(n_ptr + offs, mask=m, other=0.0).to(CDT)
            d = v - (n - a)
            acc += tl.sum(d * d, axis=1)
        tl.store(part_ptr + pid, tl.sum(acc / A, axis=0))

    @triton.jit
    def _fm_loss_bwd(v_ptr, a_ptr, n_ptr, keep_ptr, scale_ptr, gv_ptr, N, A, HAS_MASK: tl.constexpr,
                     CDT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_A: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        # d loss / d v = 2 (v - u) / A * upstream / #valid, 0 on padded rows
        scale = tl.load(scale_ptr).to(CDT) * 2.0 / A
        w = tl.zeros([BLOCK_R], dtype=CDT) + scale
        if HAS_MASK:
            w = tl.where(tl.load(keep_ptr + rows, mask=rmask, other=0) != 0, w, 0.0)
        for a0 in range(0, A, BLOCK_A):
            cols = a0 + tl.arange(0, BLOCK_A)
            m = rmask[:, None] & (cols[None, :] < A)
            offs = rows[:, None] * A + cols[None, :]
            v = tl.load(v_ptr + offs, mask=m, other=0.0).to(CDT)
            a = tl.load(a_ptr + offs, mask=m, other=0.0).to(CDT)
            n = tl.load(n_ptr + offs, mask=m, other=0.0).to(CDT)
            gv = w[:, None] * (v - (n - a))
            tl.store(gv_ptr + offs, gv.to(gv_ptr.dtype.element_ty), mask=m)


class _FlowMatchingLoss(torch.autograd.Function):
    """v_pred, actions, noise as [N, A]; keep [N] bool or None; returns the scalar loss."""

    @staticmethod
    def forward(ctx, v, a, n, keep):
        rows, a_dim = v.shape
        cdt = dispatch.torch_compute_dtype(v)
        block_r, block_a = dispatch.row_blocks(rows, a_dim)
        grid = triton.cdiv(rows, block_r)
        partial = torch.empty(grid, dtype=cdt, device=v.device)
        keep_arg = v if keep is None else keep.contiguous().view(torch.uint8)
        with dispatch.device_guard(v):
            _fm_loss_fwd[(grid,)](v, a, n, keep_arg, partial, rows, a_dim, HAS_MASK=keep is not None,
                                  CDT=dispatch.compute_dtype(v), BLOCK_R=block_r, BLOCK_A=block_a)
        count = (torch.full((), rows, dtype=cdt, device=v.device) if keep is None
                 else keep.sum().to(cdt).clamp(min=1))
        ctx.save_for_backward(v, a, n, keep_arg, count)
        ctx.has_mask = keep is not None
        return partial.sum() / count

    @staticmethod
    def backward(ctx, g):
        v, a, n, keep_arg, count = ctx.saved_tensors
        need_v, need_a, need_n = ctx.needs_input_grad[:3]

        def kernel():
            rows, a_dim = v.shape
            gv = torch.empty_like(v)
            scale = (g / count).reshape(1).contiguous()
            block_r, block_a = dispatch.row_blocks(rows, a_dim)
            with dispatch.device_guard(v):
                _fm_loss_bwd[(triton.cdiv(rows, block_r),)](
                    v, a, n, keep_arg, scale, gv, rows, a_dim, HAS_MASK=ctx.has_mask,
                    CDT=dispatch.compute_dtype(v), BLOCK_R=block_r, BLOCK_A=block_a)
            # u = noise - actions, so d/d actions = d/d v and d/d noise = -d/d v.
            return (gv if need_v else None, gv.to(a.dtype) if need_a else None,
                    (-gv).to(n.dtype) if need_n else None)

        keep = keep_arg.bool() if ctx.has_mask else None
        grads = dispatch.backward("flow_matching_loss", kernel, lambda: dispatch.reference_grads(
            lambda v_, a_, n_: _loss_torch(v_, a_, n_, keep), (v, a, n), (g,), (need_v, need_a, need_n)))
        return grads + (None,)


def _loss_triton(v_pred, actions, noise, keep):
    a_dim = v_pred.shape[-1]
    flat = [u.reshape(-1, a_dim).contiguous() for u in (v_pred, actions, noise)]
    return _FlowMatchingLoss.apply(*flat, keep)


def flow_matching_loss(v_pred: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked flow-matching MSE (module docstring).

    Args:
        v_pred: predicted velocity [B, ..., A] (e.g. [B, H, A]).
        actions, noise: the clean chunk and the noise it was mixed with, same shape
            as v_pred (any float dtype).
        mask: optional bool [B, H] (v_pred.shape[:-1]) or [B]; True = valid step.
    Returns: the scalar loss, float32 (float64 for float64 v_pred), differentiable
    w.r.t. v_pred (and actions / noise if they require grad).
    """
    keep = _loss_prepare(v_pred, actions, noise, mask)
    return dispatch.call("flow_matching_loss", _loss_triton, _loss_torch, (v_pred, actions, noise),
                         v_pred, actions, noise, keep)


def flow_matching_loss_triton(v_pred, actions, noise, mask=None):
    """:func:`flow_matching_loss` forced through the Triton kernels (tests, benchmarks)."""
    return _loss_triton(v_pred, actions, noise, _loss_prepare(v_pred, actions, noise, mask))

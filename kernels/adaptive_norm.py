"""Adaptive RMSNorm (time conditioning of the action expert) and the gated residual.

For x [B, T, D] and per-sample modulation [B, D] (broadcast over the T tokens):

    ada_rms_norm(x)  = x / sqrt(mean_D(x^2) + eps) * (weight + weight_offset) * (1 + scale) + shift
    gated_residual   = residual + gate * y
    gated_residual_ada_rms_norm(residual, y, gate, ...) = (h, ada_rms_norm(h, ...)),  h = residual + gate * y

weight, scale, shift and gate are optional (None = 1, 0, 0, 1). Gemma stores its
RMSNorm weight as an offset from 1: pass ``weight_offset=1.0`` for that. The
fused op is the pre-norm block seam: the residual stream after a gated branch
and the next block's normalised input, in one pass over memory. Arithmetic is
float32 (float64 for float64 x); outputs have x's (residual's) dtype, and the
norm of the fused op reads h rounded to that dtype, as the unfused ops would.
"""

from __future__ import annotations

import torch

from . import dispatch
from .dispatch import HAS_TRITON, tl, triton

MAX_TRITON_DIM = 16384  # wider rows run the reference (a row must fit one block)


# ------------------------------------------------------------------ validation
def _check_vec(name: str, t: torch.Tensor | None, shape: tuple[int, ...], x: torch.Tensor) -> None:
    if t is None:
        return
    dispatch.check_float(name, t)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device}, expected {x.device}")


def _check_x(name: str, x: torch.Tensor) -> None:
    dispatch.check_float(name, x)
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape [B, T, D], got {tuple(x.shape)}")


def _check_norm(x, weight, scale, shift) -> None:
    b, _, d = x.shape
    _check_vec("weight", weight, (d,), x)
    _check_vec("scale", scale, (b, d), x)
    _check_vec("shift", shift, (b, d), x)


def _check_residual(residual, y, gate) -> None:
    _check_x("residual", residual)
    dispatch.check_same("y", y, "residual", residual)
    _check_vec("gate", gate, (residual.shape[0], residual.shape[2]), residual)


# ------------------------------------------------------------------ reference
def _norm_torch(x, weight, scale, shift, eps, weight_offset):
    cdt = dispatch.torch_compute_dtype(x)
    h = x.to(cdt)
    n = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        n = n * (weight.to(cdt) + weight_offset)
    if scale is not None:
        n = n * (1.0 + scale.to(cdt)[:, None])
    if shift is not None:
        n = n + shift.to(cdt)[:, None]
    return n.to(x.dtype)


def _residual_torch(residual, y, gate):
    cdt = dispatch.torch_compute_dtype(residual)
    branch = y.to(cdt) if gate is None else gate.to(cdt)[:, None] * y.to(cdt)
    return (residual.to(cdt) + branch).to(residual.dtype)


def _fused_torch(residual, y, gate, weight, scale, shift, eps, weight_offset):
    h = _residual_torch(residual, y, gate)
    return h, _norm_torch(h, weight, scale, shift, eps, weight_offset)


def ada_rms_norm_reference(x, weight=None, scale=None, shift=None, eps=1e-6, weight_offset=0.0):
    """Pure-torch :func:`ada_rms_norm`."""
    _check_x("x", x)
    _check_norm(x, weight, scale, shift)
    return _norm_torch(x, weight, scale, shift, eps, weight_offset)


def gated_residual_reference(residual, y, gate):
    """Pure-torch :func:`gated_residual`."""
    _check_residual(residual, y, gate)
    return _residual_torch(residual, y, gate)


def gated_residual_ada_rms_norm_reference(residual, y, gate, weight=None, scale=None, shift=None, eps=1e-6,
                                         weight_offset=0.0):
    """Pure-torch :func:`gated_residual_ada_rms_norm`."""
    _check_residual(residual, y, gate)
    _check_norm(residual, weight, scale, shift)
    return _fused_torch(residual, y, gate, weight, scale, shift, eps, weight_offset)


# ------------------------------------------------------------------ Triton
if HAS_TRITON:

    @triton.jit
    def _load_vec(ptr, offs, m, other, ENABLED: tl.constexpr, CDT: tl.constexpr):
        if ENABLED:
            val = tl.load(ptr + offs, mask=m, other=0.0).to(CDT)
        else:
            val = tl.zeros(offs.shape, dtype=CDT) + other
        return val

    @triton.jit
    def _norm_fwd(x_ptr, res_ptr, gate_ptr, w_ptr, scale_ptr, shift_ptr, h_ptr, out_ptr, rstd_ptr,
                  T, D, T_PER, eps, w_offset,
                  HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr, HAS_W: tl.constexpr, HAS_SCALE: tl.constexpr,
                  HAS_SHIFT: tl.constexpr, CDT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        t_start = tl.program_id(1) * T_PER
        cols = tl.arange(0, BLOCK_D)
        cmask = cols < D
        scale1 = 1.0 + _load_vec(scale_ptr, b * D + cols, cmask, 0.0, HAS_SCALE, CDT)
        shift = _load_vec(shift_ptr, b * D + cols, cmask, 0.0, HAS_SHIFT, CDT)
        gate = _load_vec(gate_ptr, b * D + cols, cmask, 1.0, HAS_GATE, CDT)
        w = _load_vec(w_ptr, cols, cmask, 1.0, HAS_W, CDT)
        if HAS_W:
            w = w + w_offset
        for t0 in range(t_start, t_start + T_PER, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            rmask = rows < T
            m = rmask[:, None] & cmask[None, :]
            offs = (b * T + rows)[:, None] * D + cols[None, :]
            if HAS_RES:
                y = tl.load(x_ptr + offs, mask=m, other=0.0).to(CDT)
                r = tl.load(res_ptr + offs, mask=m, other=0.0).to(CDT)
                h = (r + gate[None, :] * y).to(h_ptr.dtype.element_ty)
                tl.store(h_ptr + offs, h, mask=m)
                h = h.to(CDT)
            else:
                h = tl.load(x_ptr + offs, mask=m, other=0.0).to(CDT)
            rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=1) / D + eps)
            n = h * rstd[:, None] * w[None, :]
            out = n * scale1[None, :] + shift[None, :]
            tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=m)
            tl.store(rstd_ptr + b * T + rows, rstd, mask=rmask)

    @triton.jit
    def _norm_bwd(h_ptr, y_ptr, gate_ptr, w_ptr, scale_ptr, rstd_ptr, gout_ptr, gh_ptr,
                  dx_ptr, dy_ptr, pscale_ptr, pshift_ptr, pgate_ptr, pw_ptr,
                  T, D, T_PER, S, w_offset,
                  HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr, HAS_W: tl.constexpr, HAS_SCALE: tl.constexpr,
                  HAS_GOUT: tl.constexpr, HAS_GH: tl.constexpr, CDT: tl.constexpr,
                  BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        # dx_ptr gets d/dx (plain norm) or d/d residual (fused); dy_ptr d/dy (fused).
        b = tl.program_id(0)
        s = tl.program_id(1)
        t_start = s * T_PER
        cols = tl.arange(0, BLOCK_D)
        cmask = cols < D
        scale1 = 1.0 + _load_vec(scale_ptr, b * D + cols, cmask, 0.0, HAS_SCALE, CDT)
        gate = _load_vec(gate_ptr, b * D + cols, cmask, 1.0, HAS_GATE, CDT)
        w = _load_vec(w_ptr, cols, cmask, 1.0, HAS_W, CDT)
        if HAS_W:
            w = w + w_offset
        acc_scale = tl.zeros([BLOCK_D], dtype=CDT)
        acc_shift = tl.zeros([BLOCK_D], dtype=CDT)
        acc_gate = tl.zeros([BLOCK_D], dtype=CDT)
        acc_w = tl.zeros([BLOCK_D], dtype=CDT)
        for t0 in range(t_start, t_start + T_PER, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            rmask = rows < T
            m = rmask[:, None] & cmask[None, :]
            offs = (b * T + rows)[:, None] * D + cols[None, :]
            h = tl.load(h_ptr + offs, mask=m, other=0.0).to(CDT)
            rstd = tl.load(rstd_ptr + b * T + rows, mask=rmask, other=0.0).to(CDT)
            xhat = h * rstd[:, None]
            dh = tl.zeros([BLOCK_T, BLOCK_D], dtype=CDT)
            if HAS_GOUT:
                go = tl.load(gout_ptr + offs, mask=m, other=0.0).to(CDT)
                acc_shift += tl.sum(go, axis=0)
                acc_scale += tl.sum(go * xhat * w[None, :], axis=0)
                dn = go * scale1[None, :]
                acc_w += tl.sum(dn * xhat, axis=0)
                dxhat = dn * w[None, :]
                dh = rstd[:, None] * (dxhat - xhat * (tl.sum(dxhat * xhat, axis=1) / D)[:, None])
            if HAS_GH:
                dh += tl.load(gh_ptr + offs, mask=m, other=0.0).to(CDT)
            tl.store(dx_ptr + offs, dh.to(dx_ptr.dtype.element_ty), mask=m)
            if HAS_RES:
                tl.store(dy_ptr + offs, (dh * gate[None, :]).to(dy_ptr.dtype.element_ty), mask=m)
                if HAS_GATE:
                    y = tl.load(y_ptr + offs, mask=m, other=0.0).to(CDT)
                    acc_gate += tl.sum(dh * y, axis=0)
        part = (b * S + s) * D + cols
        tl.store(pscale_ptr + part, acc_scale, mask=cmask)
        tl.store(pshift_ptr + part, acc_shift, mask=cmask)
        tl.store(pgate_ptr + part, acc_gate, mask=cmask)
        tl.store(pw_ptr + part, acc_w, mask=cmask)

    @triton.jit
    def _residual_fwd(res_ptr, y_ptr, gate_ptr, h_ptr, T, D, T_PER, HAS_GATE: tl.constexpr, CDT: tl.constexpr,
                      BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        t_start = tl.program_id(1) * T_PER
        cols = tl.arange(0, BLOCK_D)
        cmask = cols < D
        gate = _load_vec(gate_ptr, b * D + cols, cmask, 1.0, HAS_GATE, CDT)
        for t0 in range(t_start, t_start + T_PER, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            m = (rows < T)[:, None] & cmask[None, :]
            offs = (b * T + rows)[:, None] * D + cols[None, :]
            r = tl.load(res_ptr + offs, mask=m, other=0.0).to(CDT)
            y = tl.load(y_ptr + offs, mask=m, other=0.0).to(CDT)
            tl.store(h_ptr + offs, (r + gate[None, :] * y).to(h_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _residual_bwd(g_ptr, y_ptr, gate_ptr, dy_ptr, pgate_ptr, T, D, T_PER, S,
                      NEED_Y: tl.constexpr, NEED_GATE: tl.constexpr, CDT: tl.constexpr,
                      BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        s = tl.program_id(1)
        t_start = s * T_PER
        cols = tl.arange(0, BLOCK_D)
        cmask = cols < D
        gate = tl.load(gate_ptr + b * D + cols, mask=cmask, other=0.0).to(CDT)
        acc = tl.zeros([BLOCK_D], dtype=CDT)
        for t0 in range(t_start, t_start + T_PER, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            m = (rows < T)[:, None] & cmask[None, :]
            offs = (b * T + rows)[:, None] * D + cols[None, :]
            g = tl.load(g_ptr + offs, mask=m, other=0.0).to(CDT)
            if NEED_Y:
                tl.store(dy_ptr + offs, (g * gate[None, :]).to(dy_ptr.dtype.element_ty), mask=m)
            if NEED_GATE:
                acc += tl.sum(g * tl.load(y_ptr + offs, mask=m, other=0.0).to(CDT), axis=0)
        if NEED_GATE:
            tl.store(pgate_ptr + (b * S + s) * D + cols, acc, mask=cmask)


def _tiling(x: torch.Tensor, split_rows: bool) -> tuple[int, int, int, int, int]:
    """(BLOCK_T, BLOCK_D, T_PER, S, num_warps) for x [B, T, D].

    Each program owns T_PER consecutive tokens of one sample (grid [B, S]).
    Backward programs (split_rows False) own several tiles, so the per-program
    partial sums of the [B, D] gradients stay small.
    """
    b, t, d = x.shape
    block_d = triton.next_power_of_2(d)
    tile = 1 << 16 if dispatch.interpreting() else 4096
    block_t = max(1, min(triton.next_power_of_2(t), tile // block_d))
    n_tiles = triton.cdiv(t, block_t)
    if dispatch.interpreting():
        splits = 1
    elif split_rows:
        splits = n_tiles
    else:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 1
        splits = max(1, min(n_tiles, triton.cdiv(4 * sms, b)))
    t_per = triton.cdiv(n_tiles, splits) * block_t
    splits = triton.cdiv(t, t_per)
    num_warps = 8 if block_t * block_d >= 8192 else 4
    return block_t, block_d, t_per, splits, num_warps


def _partials(x: torch.Tensor, splits: int) -> list[torch.Tensor]:
    b, _, d = x.shape
    cdt = dispatch.torch_compute_dtype(x)
    return [torch.empty(b, splits, d, dtype=cdt, device=x.device) for _ in range(4)]


def _fwd(x, residual, gate, weight, scale, shift, eps, weight_offset):
    """Launch the norm forward; with ``residual`` x is the branch output y. Returns (h, out, rstd)."""
    b, t, d = x.shape
    block_t, block_d, t_per, splits, warps = _tiling(x, split_rows=True)
    out_dtype = x.dtype if residual is None else residual.dtype
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    h = torch.empty_like(out) if residual is not None else x
    rstd = torch.empty(b * t, dtype=dispatch.torch_compute_dtype(x), device=x.device)
    dummy = rstd
    with dispatch.device_guard(x):
        _norm_fwd[(b, splits)](
            x, residual if residual is not None else dummy, gate if gate is not None else dummy,
            weight if weight is not None else dummy, scale if scale is not None else dummy,
            shift if shift is not None else dummy, h, out, rstd, t, d, t_per, float(eps), float(weight_offset),
            HAS_RES=residual is not None, HAS_GATE=gate is not None, HAS_W=weight is not None,
            HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, CDT=dispatch.compute_dtype(out),
            BLOCK_T=block_t, BLOCK_D=block_d, num_warps=warps)
    return h, out, rstd


def _bwd(h, y, gate, weight, scale, rstd, g_out, g_h, weight_offset, fused: bool):
    """Launch the norm backward. Returns (dx_or_dres, dy, dscale, dshift, dgate, dweight) (full tensors)."""
    b, t, d = h.shape
    block_t, block_d, t_per, splits, warps = _tiling(h, split_rows=False)
    p_scale, p_shift, p_gate, p_w = _partials(h, splits)
    dx = torch.empty_like(h)
    dy = torch.empty_like(y) if fused else dx
    dummy = rstd
    with dispatch.device_guard(h):
        _norm_bwd[(b, splits)](
            h, y if y is not None else dummy, gate if gate is not None else dummy,
            weight if weight is not None else dummy, scale if scale is not None else dummy, rstd,
            g_out.contiguous() if g_out is not None else dummy, g_h.contiguous() if g_h is not None else dummy,
            dx, dy, p_scale, p_shift, p_gate, p_w, t, d, t_per, splits, float(weight_offset),
            HAS_RES=fused, HAS_GATE=gate is not None, HAS_W=weight is not None, HAS_SCALE=scale is not None,
            HAS_GOUT=g_out is not None, HAS_GH=g_h is not None, CDT=dispatch.compute_dtype(h),
            BLOCK_T=block_t, BLOCK_D=block_d, num_warps=warps)
    return dx, dy, p_scale.sum(1), p_shift.sum(1), p_gate.sum(1), p_w.sum((0, 1))


def _cast(grad: torch.Tensor, like: torch.Tensor | None, need: bool) -> torch.Tensor | None:
    return grad.to(like.dtype) if need and like is not None else None


class _AdaRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, scale, shift, eps, weight_offset):
        _, out, rstd = _fwd(x, None, None, weight, scale, shift, eps, weight_offset)
        ctx.save_for_backward(x, weight, scale, shift, rstd)
        ctx.eps, ctx.weight_offset = eps, weight_offset
        return out

    @staticmethod
    def backward(ctx, g_out):
        x, weight, scale, shift, rstd = ctx.saved_tensors
        need = ctx.needs_input_grad[:4]

        def kernel():
            dx, _, dscale, dshift, _, dw = _bwd(x, None, None, weight, scale, rstd, g_out, None,
                                                ctx.weight_offset, fused=False)
            return (dx if need[0] else None, _cast(dw, weight, need[1]), _cast(dscale, scale, need[2]),
                    _cast(dshift, shift, need[3]))

        grads = dispatch.backward("ada_rms_norm", kernel, lambda: dispatch.reference_grads(
            lambda x_, w_, sc_, sh_: _norm_torch(x_, w_, sc_, sh_, ctx.eps, ctx.weight_offset),
            (x, weight, scale, shift), (g_out,), need))
        return grads + (None, None)


class _GatedResidualAdaRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, residual, y, gate, weight, scale, shift, eps, weight_offset):
        ctx.set_materialize_grads(False)
        h, out, rstd = _fwd(y, residual, gate, weight, scale, shift, eps, weight_offset)
        ctx.save_for_backward(h, y, gate, weight, scale, shift, rstd)
        ctx.eps, ctx.weight_offset = eps, weight_offset
        return h, out

    @staticmethod
    def backward(ctx, g_h, g_out):
        h, y, gate, weight, scale, shift, rstd = ctx.saved_tensors
        need = ctx.needs_input_grad[:6]
        if g_h is None and g_out is None:
            return (None,) * 8

        def kernel():
            dres, dy, dscale, dshift, dgate, dw = _bwd(h, y, gate, weight, scale, rstd, g_out, g_h,
                                                       ctx.weight_offset, fused=True)
            return (dres if need[0] else None, dy if need[1] else None, _cast(dgate, gate, need[2]),
                    _cast(dw, weight, need[3]), _cast(dscale, scale, need[4]), _cast(dshift, shift, need[5]))

        def fallback():
            # Differentiate the norm of the saved h, then chain through h = residual + gate * y
            # by hand (the residual itself is not saved: its value does not enter the gradients).
            dh_norm, dw, dscale, dshift = (dispatch.reference_grads(
                lambda h_, w_, sc_, sh_: _norm_torch(h_, w_, sc_, sh_, ctx.eps, ctx.weight_offset),
                (h, weight, scale, shift), (g_out,), (True,) + tuple(need[3:]))
                if g_out is not None else (None, None, None, None))
            dh = sum(g for g in (dh_norm, g_h) if g is not None)
            dy = dh if gate is None else dh * gate[:, None]
            dgate = (dh * y).sum(1).to(gate.dtype) if need[2] else None
            return (dh if need[0] else None, dy if need[1] else None, dgate, dw, dscale, dshift)

        grads = dispatch.backward("gated_residual_ada_rms_norm", kernel, fallback)
        return grads + (None, None)


class _GatedResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, residual, y, gate):
        b, t, d = residual.shape
        block_t, block_d, t_per, splits, warps = _tiling(residual, split_rows=True)
        h = torch.empty_like(residual)
        with dispatch.device_guard(residual):
            _residual_fwd[(b, splits)](residual, y, gate, h, t, d, t_per, HAS_GATE=True,
                                       CDT=dispatch.compute_dtype(residual), BLOCK_T=block_t, BLOCK_D=block_d,
                                       num_warps=warps)
        ctx.save_for_backward(y, gate)
        return h

    @staticmethod
    def backward(ctx, g):
        y, gate = ctx.saved_tensors
        need_r, need_y, need_gate = ctx.needs_input_grad

        def kernel():
            b, t, d = y.shape
            block_t, block_d, t_per, splits, warps = _tiling(y, split_rows=False)
            dy = torch.empty_like(y) if need_y else y
            pgate = torch.empty(b, splits, d, dtype=dispatch.torch_compute_dtype(y), device=y.device)
            if need_y or need_gate:
                with dispatch.device_guard(y):
                    _residual_bwd[(b, splits)](g.contiguous(), y, gate, dy, pgate, t, d, t_per, splits,
                                               NEED_Y=need_y, NEED_GATE=need_gate, CDT=dispatch.compute_dtype(y),
                                               BLOCK_T=block_t, BLOCK_D=block_d, num_warps=warps)
            return (g if need_r else None, dy if need_y else None,
                    pgate.sum(1).to(gate.dtype) if need_gate else None)

        def fallback():
            return (g if need_r else None, g * gate[:, None] if need_y else None,
                    (g * y).sum(1).to(gate.dtype) if need_gate else None)

        return dispatch.backward("gated_residual", kernel, fallback)


# ------------------------------------------------------------------ public API
def _contig(*ts):
    return tuple(t.contiguous() if t is not None else None for t in ts)


def _norm_triton(x, weight, scale, shift, eps, weight_offset):
    return _AdaRMSNorm.apply(*_contig(x, weight, scale, shift), float(eps), float(weight_offset))


def _fused_triton(residual, y, gate, weight, scale, shift, eps, weight_offset):
    return _GatedResidualAdaRMSNorm.apply(*_contig(residual, y, gate, weight, scale, shift), float(eps),
                                          float(weight_offset))


def _residual_triton(residual, y, gate):
    return _GatedResidual.apply(*_contig(residual, y, gate))


def ada_rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                 shift: torch.Tensor | None = None, eps: float = 1e-6, weight_offset: float = 0.0) -> torch.Tensor:
    """rmsnorm(x) * (weight + weight_offset) * (1 + scale) + shift.

    Args:
        x: [B, T, D] tokens. weight: [D] or None. scale, shift: [B, D] or None,
        broadcast over the T tokens. eps: added to mean(x^2). weight_offset:
        1.0 for Gemma-style weights stored as an offset from 1.
    Returns: [B, T, D] in x's dtype; differentiable w.r.t. x, weight, scale, shift.
    """
    _check_x("x", x)
    _check_norm(x, weight, scale, shift)
    if x.shape[-1] > MAX_TRITON_DIM:
        return _norm_torch(x, weight, scale, shift, eps, weight_offset)
    return dispatch.call("ada_rms_norm", _norm_triton, _norm_torch, (x, weight, scale, shift),
                         x, weight, scale, shift, eps, weight_offset)


def ada_rms_norm_triton(x, weight=None, scale=None, shift=None, eps=1e-6, weight_offset=0.0):
    """:func:`ada_rms_norm` forced through the Triton kernels (tests, benchmarks)."""
    _check_x("x", x)
    _check_norm(x, weight, scale, shift)
    return _norm_triton(x, weight, scale, shift, eps, weight_offset)


def gated_residual(residual: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """residual + gate[:, None, :] * y for residual, y [B, T, D] and gate [B, D].

    Returns [B, T, D] in residual's dtype; differentiable w.r.t. all three.
    """
    _check_residual(residual, y, gate)
    if gate is None:
        raise ValueError("gate must be a [B, D] tensor (use residual + y for an ungated residual)")
    if residual.shape[-1] > MAX_TRITON_DIM:
        return _residual_torch(residual, y, gate)
    return dispatch.call("gated_residual", _residual_triton, _residual_torch, (residual, y, gate),
                         residual, y, gate)


def gated_residual_triton(residual, y, gate):
    """:func:`gated_residual` forced through the Triton kernels (tests, benchmarks)."""
    _check_residual(residual, y, gate)
    return _residual_triton(residual, y, gate)


def gated_residual_ada_rms_norm(residual: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None,
                                weight: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                                shift: torch.Tensor | None = None, eps: float = 1e-6,
                                weight_offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``h = residual + gate * y`` and ``out = ada_rms_norm(h, weight, scale, shift)``.

    Args: residual, y [B, T, D]; gate [B, D] or None (plain residual); the rest as
    in :func:`ada_rms_norm`. Returns (h, out), both [B, T, D] in residual's
    dtype; differentiable w.r.t. every tensor input through both outputs.
    """
    _check_residual(residual, y, gate)
    _check_norm(residual, weight, scale, shift)
    if residual.shape[-1] > MAX_TRITON_DIM:
        return _fused_torch(residual, y, gate, weight, scale, shift, eps, weight_offset)
    return dispatch.call("gated_residual_ada_rms_norm", _fused_triton, _fused_torch,
                         (residual, y, gate, weight, scale, shift),
                         residual, y, gate, weight, scale, shift, eps, weight_offset)


def gated_residual_ada_rms_norm_triton(residual, y, gate, weight=None, scale=None, shift=None, eps=1e-6,
                                       weight_offset=0.0):
    """:func:`gated_residual_ada_rms_norm` forced through the Triton kernels (tests, benchmarks)."""
    _check_residual(residual, y, gate)
    _check_norm(residual, weight, scale, shift)
    return _fused_triton(residual, y, gate, weight, scale, shift, eps, weight_offset)

"""Flow-SDE denoising step and its Gaussian log-prob (docs/ALGORITHMS.md section 1).

Convention (openpi's): ``x_t = t * eps + (1 - t) * a``, t = 1 is noise, t = 0 is
data, one step goes from t to t - dt with ``x <- x - dt * v``. Per batch row b,
with noise level ``a_b`` (0 where the stochastic mask is False):

    t_den   = t - dt if t >= 1 else t          # "at t = 1 use the next time step"
    sigma   = a * sqrt(t / (1 - t_den))        # at t = 1: a / sqrt(dt)
    c       = sigma^2 / (2 t)                  # 0 where sigma = 0 (also at t = 0)
    mu      = x - dt * (v + c * (x + (1 - t) * v))
    std     = sigma * sqrt(dt)                 # at t = 1: exactly a
    x_next  = mu + std * xi                    # = mu where std = 0
    log_prob = sum over the last dim of log N(x_next; mu, std^2), computed from
               (x_next - mu) / std so that recomputing it from a stored x_next
               gives the same number; 0 where std = 0
    entropy  = sum over the last dim of 0.5 * log(2 pi e std^2); 0 where std = 0

Where std = 0 (stochastic mask False, noise level 0, or t = 0) the step is
exactly the Euler step ``x - dt * v`` and contributes nothing to log-prob or
entropy ("mixed" mode: the ODE steps of a rollout).

Reading of "at t = 1 use the next time step in the denominator": only the
``1 - t`` under the square root uses t - dt (as in the pi-RL code); the
numerator and the ``2 t`` of the drift keep t. Times are expected in [0, 1]
with 0 < dt <= t; the first step must pass t exactly 1.0.
"""

from __future__ import annotations

import math

import torch

from . import dispatch
from .dispatch import HAS_TRITON, tl, triton

LOG_2PI = math.log(2.0 * math.pi)

Scalar = float | torch.Tensor


# ------------------------------------------------------------------ validation
def _prepare(x: torch.Tensor, v: torch.Tensor, other_name: str, other: torch.Tensor, t: Scalar, dt: Scalar,
             noise_level: Scalar, stochastic_mask: torch.Tensor | None):
    dispatch.check_float("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must have shape [B, ..., A] (at least 2 dims), got {tuple(x.shape)}")
    dispatch.check_same("v", v, "x", x)
    dispatch.check_same(other_name, other, "x", x)
    batch, cdt = x.shape[0], dispatch.torch_compute_dtype(x)
    tb = dispatch.per_batch("t", t, batch, x, cdt)
    dtb = dispatch.per_batch("dt", dt, batch, x, cdt)
    ab = dispatch.per_batch("noise_level", noise_level, batch, x, cdt)
    keep = dispatch.row_mask("stochastic_mask", stochastic_mask, x.shape[:-1], x.device)
    return tb, dtb, ab, keep


# ------------------------------------------------------------------ reference
def _row_params_torch(tb, dtb, ab, keep, batch: int, rows_per_batch: int):
    """Per-row (t, dt, c, std, positive) as [B, R, 1] tensors."""
    t = tb.view(batch, 1, 1)
    dt = dtb.view(batch, 1, 1)
    a = ab.view(batch, 1, 1).expand(batch, rows_per_batch, 1)
    if keep is not None:
        a = torch.where(keep.view(batch, rows_per_batch, 1), a, torch.zeros_like(a))
    t_den = torch.where(t >= 1.0, t - dt, t)
    sigma = a * torch.sqrt(t / (1.0 - t_den))
    c = torch.where(sigma > 0, sigma * sigma / (2.0 * t), torch.zeros_like(sigma))
    std = sigma * torch.sqrt(dt)
    return t, dt, c, std, std > 0


def _gaussian_terms_torch(x_next, mu, std, pos):
    safe = torch.where(pos, std, torch.ones_like(std))
    z = (x_next - mu) / safe
    return torch.where(pos, -0.5 * z * z - torch.log(safe) - 0.5 * LOG_2PI, torch.zeros_like(z))


def _step_torch(x, v, xi, tb, dtb, ab, keep, return_entropy):
    batch, a_dim = x.shape[0], x.shape[-1]
    cdt = tb.dtype
    x3, v3, xi3 = (u.reshape(batch, -1, a_dim).to(cdt) for u in (x, v, xi))
    t, dt, c, std, pos = _row_params_torch(tb, dtb, ab, keep, batch, x3.shape[1])
    mu = x3 - dt * (v3 + c * (x3 + (1.0 - t) * v3))
    x_next = torch.where(pos, mu + std * xi3, mu)
    # Round to the storage dtype first so the log-prob is that of the x_next returned.
    x_next, mu = x_next.to(x.dtype), mu.to(x.dtype)
    log_prob = _gaussian_terms_torch(x_next.to(cdt), mu.to(cdt), std, pos).sum(-1)
    rows = x.shape[:-1]
    out = (x_next.reshape(x.shape), mu.reshape(x.shape), std.reshape(rows + (1,)), log_prob.reshape(rows))
    if return_entropy:
        safe = torch.where(pos, std, torch.ones_like(std))
        ent = torch.where(pos, a_dim * (0.5 + 0.5 * LOG_2PI + torch.log(safe)), torch.zeros_like(std))
        out = out + (ent.reshape(rows),)
    return out


def _log_prob_torch(x, v, x_next, tb, dtb, ab, keep):
    batch, a_dim = x.shape[0], x.shape[-1]
    cdt = tb.dtype
    x3, v3, xn3 = (u.reshape(batch, -1, a_dim).to(cdt) for u in (x, v, x_next))
    t, dt, c, std, pos = _row_params_torch(tb, dtb, ab, keep, batch, x3.shape[1])
    mu = x3 - dt * (v3 + c * (x3 + (1.0 - t) * v3))
    return _gaussian_terms_torch(xn3, mu, std, pos).sum(-1).reshape(x.shape[:-1])


def flow_sde_step_reference(x, v, t, dt, noise_level, xi, stochastic_mask=None, return_entropy=False):
    """Pure-torch :func:`flow_sde_step` (differentiable by autograd)."""
    return _step_torch(x, v, xi, *_prepare(x, v, "xi", xi, t, dt, noise_level, stochastic_mask), return_entropy)


def flow_sde_log_prob_reference(x, v, x_next, t, dt, noise_level, stochastic_mask=None):
    """Pure-torch :func:`flow_sde_log_prob` (differentiable by autograd)."""
    return _log_prob_torch(x, v, x_next, *_prepare(x, v, "x_next", x_next, t, dt, noise_level, stochastic_mask))


# ------------------------------------------------------------------ Triton
if HAS_TRITON:

    @triton.jit
    def _row_params(t_ptr, dt_ptr, a_ptr, keep_ptr, rows, rmask, R, HAS_MASK: tl.constexpr, CDT: tl.constexpr):
        b = rows // R
        t = tl.load(t_ptr + b, mask=rmask, other=0.5).to(CDT)
        dt = tl.load(dt_ptr + b, mask=rmask, other=0.0).to(CDT)
        a = tl.load(a_ptr + b, mask=rmask, other=0.0).to(CDT)
        if HAS_MASK:
            keep = tl.load(keep_ptr + rows, mask=rmask, other=0)
            a = tl.where(keep != 0, a, 0.0)
        t_den = tl.where(t >= 1.0, t - dt, t)
        sigma = a * tl.sqrt(t / (1.0 - t_den))
        c = tl.where(sigma > 0, sigma * sigma / (2.0 * t), 0.0)
        std = sigma * tl.sqrt(dt)
        return t, dt, c, std, std > 0

    @triton.jit
    def _sde_step_kernel(x_ptr, v_ptr, xi_ptr, t_ptr, dt_ptr, a_ptr, keep_ptr,
                         xn_ptr, mu_ptr, std_ptr, lp_ptr, ent_ptr, N, A, R,
                         HAS_MASK: tl.constexpr, CDT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_A: tl.constexpr):
        LOG_2PI_C: tl.constexpr = 1.8378770664093453
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        t, dt, c, std, pos = _row_params(t_ptr, dt_ptr, a_ptr, keep_ptr, rows, rmask, R, HAS_MASK, CDT)
        log_std = tl.log(tl.where(pos, std, 1.0))
        acc = tl.zeros([BLOCK_R], dtype=CDT)
        for a0 in range(0, A, BLOCK_A):
            cols = a0 + tl.arange(0, BLOCK_A)
            m = rmask[:, None] & (cols[None, :] < A)
            offs = rows[:, None] * A + cols[None, :]
            x = tl.load(x_ptr + offs, mask=m, other=0.0).to(CDT)
            v = tl.load(v_ptr + offs, mask=m, other=0.0).to(CDT)
            xi = tl.load(xi_ptr + offs, mask=m, other=0.0).to(CDT)
            mu = x - dt[:, None] * (v + c[:, None] * (x + (1.0 - t)[:, None] * v))
            xn = tl.where(pos[:, None], mu + std[:, None] * xi, mu)
            # Log-prob of the rounded, stored values (see _step_torch).
            mu = mu.to(mu_ptr.dtype.element_ty)
            xn = xn.to(xn_ptr.dtype.element_ty)
            tl.store(mu_ptr + offs, mu, mask=m)
            tl.store(xn_ptr + offs, xn, mask=m)
            z = (xn.to(CDT) - mu.to(CDT)) / tl.where(pos, std, 1.0)[:, None]
            term = -0.5 * z * z - log_std[:, None] - 0.5 * LOG_2PI_C
            acc += tl.sum(tl.where(m & pos[:, None], term, 0.0), axis=1)
        ent = tl.where(pos, A * (0.5 + 0.5 * LOG_2PI_C + log_std), 0.0)
        tl.store(std_ptr + rows, std, mask=rmask)
        tl.store(lp_ptr + rows, acc, mask=rmask)
        tl.store(ent_ptr + rows, ent, mask=rmask)

    @triton.jit
    def _sde_log_prob_fwd(x_ptr, v_ptr, xn_ptr, t_ptr, dt_ptr, a_ptr, keep_ptr, lp_ptr, N, A, R,
                          HAS_MASK: tl.constexpr, CDT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_A: tl.constexpr):
        LOG_2PI_C: tl.constexpr = 1.8378770664093453
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        t, dt, c, std, pos = _row_params(t_ptr, dt_ptr, a_ptr, keep_ptr, rows, rmask, R, HAS_MASK, CDT)
        safe = tl.where(pos, std, 1.0)
        log_std = tl.log(safe)
        acc = tl.zeros([BLOCK_R], dtype=CDT)
        for a0 in range(0, A, BLOCK_A):
            cols = a0 + tl.arange(0, BLOCK_A)
            m = rmask[:, None] & (cols[None, :] < A)
            offs = rows[:, None] * A + cols[None, :]
            x = tl.load(x_ptr + offs, mask=m, other=0.0).to(CDT)
            v = tl.load(v_ptr + offs, mask=m, other=0.0).to(CDT)
            xn = tl.load(xn_ptr + offs, mask=m, other=0.0).to(CDT)
            mu = x - dt[:, None] * (v + c[:, None] * (x + (1.0 - t)[:, None] * v))
            z = (xn - mu) / safe[:, None]
            term = -0.5 * z * z - log_std[:, None] - 0.5 * LOG_2PI_C
            acc += tl.sum(tl.where(m & pos[:, None], term, 0.0), axis=1)
        tl.store(lp_ptr + rows, acc, mask=rmask)

    @triton.jit
    def _sde_log_prob_bwd(x_ptr, v_ptr, xn_ptr, t_ptr, dt_ptr, a_ptr, keep_ptr, g_ptr,
                          gx_ptr, gv_ptr, gxn_ptr, N, A, R,
                          HAS_MASK: tl.constexpr, NEED_X: tl.constexpr, NEED_V: tl.constexpr, NEED_XN: tl.constexpr,
                          CDT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_A: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        t, dt, c, std, pos = _row_params(t_ptr, dt_ptr, a_ptr, keep_ptr, rows, rmask, R, HAS_MASK, CDT)
        safe = tl.where(pos, std, 1.0)
        g = tl.load(g_ptr + rows, mask=rmask, other=0.0).to(CDT)
        g = tl.where(pos, g, 0.0)
        dmu_dx = 1.0 - dt * c
        dmu_dv = -dt * (1.0 + c * (1.0 - t))
        for a0 in range(0, A, BLOCK_A):
            cols = a0 + tl.arange(0, BLOCK_A)
            m = rmask[:, None] & (cols[None, :] < A)
            offs = rows[:, None] * A + cols[None, :]
            x = tl.load(x_ptr + offs, mask=m, other=0.0).to(CDT)
            v = tl.load(v_ptr + offs, mask=m, other=0.0).to(CDT)
            xn = tl.load(xn_ptr + offs, mask=m, other=0.0).to(CDT)
            mu = x - dt[:, None] * (v + c[:, None] * (x + (1.0 - t)[:, None] * v))
            # d log_prob / d mu = (x_next - mu) / std^2
            gmu = g[:, None] * ((xn - mu) / safe[:, None]) / safe[:, None]
            if NEED_X:
                tl.store(gx_ptr + offs, (gmu * dmu_dx[:, None]).to(gx_ptr.dtype.element_ty), mask=m)
            if NEED_V:
                tl.store(gv_ptr + offs, (gmu * dmu_dv[:, None]).to(gv_ptr.dtype.element_ty), mask=m)
            if NEED_XN:
                tl.store(gxn_ptr + offs, (-gmu).to(gxn_ptr.dtype.element_ty), mask=m)


def _mask_arg(keep: torch.Tensor | None, fallback: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if keep is None:
        return fallback, False
    return keep.contiguous().view(torch.uint8), True


# No fused multiply-add: with FMA, `x - dt * v` rounds once instead of twice, so a zero-noise step
# differed from the Euler ODE step by up to 2.4e-7 on an H200 (BENCHMARKS.md); the noise-free
# rows of a Flow-SDE chain must be exactly the deployed sampler's step.
FP_FUSION = False


def _step_triton(x, v, xi, tb, dtb, ab, keep, return_entropy):
    a_dim = x.shape[-1]
    n = x.numel() // a_dim
    xc, vc, xic = x.contiguous(), v.contiguous(), xi.contiguous()
    x_next, mu = torch.empty_like(xc), torch.empty_like(xc)
    std, lp, ent = (torch.empty(n, dtype=tb.dtype, device=x.device) for _ in range(3))
    keep_arg, has_mask = _mask_arg(keep, tb)
    block_r, block_a = dispatch.row_blocks(n, a_dim)
    with dispatch.device_guard(x):
        _sde_step_kernel[(triton.cdiv(n, block_r),)](
            xc, vc, xic, tb, dtb, ab, keep_arg, x_next, mu, std, lp, ent, n, a_dim, n // x.shape[0],
            HAS_MASK=has_mask, CDT=dispatch.compute_dtype(x), BLOCK_R=block_r, BLOCK_A=block_a, enable_fp_fusion=FP_FUSION)
    rows = x.shape[:-1]
    out = (x_next, mu, std.reshape(rows + (1,)), lp.reshape(rows))
    return out + (ent.reshape(rows),) if return_entropy else out


class _SdeLogProb(torch.autograd.Function):
    """log_prob(x, v, x_next) on [N, A] rows with per-batch schedule tensors."""

    @staticmethod
    def forward(ctx, x, v, x_next, tb, dtb, ab, keep):
        n, a_dim = x.shape
        lp = torch.empty(n, dtype=tb.dtype, device=x.device)
        keep_arg, has_mask = _mask_arg(keep, tb)
        block_r, block_a = dispatch.row_blocks(n, a_dim)
        with dispatch.device_guard(x):
            _sde_log_prob_fwd[(triton.cdiv(n, block_r),)](
                x, v, x_next, tb, dtb, ab, keep_arg, lp, n, a_dim, n // tb.shape[0],
                HAS_MASK=has_mask, CDT=dispatch.compute_dtype(x), BLOCK_R=block_r, BLOCK_A=block_a,
                enable_fp_fusion=FP_FUSION)
        ctx.save_for_backward(x, v, x_next, tb, dtb, ab, keep_arg)
        ctx.has_mask = has_mask
        return lp

    @staticmethod
    def backward(ctx, g):
        x, v, x_next, tb, dtb, ab, keep_arg = ctx.saved_tensors
        need_x, need_v, need_xn = ctx.needs_input_grad[:3]

        def kernel():
            n, a_dim = x.shape
            gx = torch.empty_like(x) if need_x else None
            gv = torch.empty_like(v) if need_v else None
            gxn = torch.empty_like(x_next) if need_xn else None
            block_r, block_a = dispatch.row_blocks(n, a_dim)
            with dispatch.device_guard(x):
                _sde_log_prob_bwd[(triton.cdiv(n, block_r),)](
                    x, v, x_next, tb, dtb, ab, keep_arg, g.contiguous(),
                    gx if need_x else x, gv if need_v else x, gxn if need_xn else x, n, a_dim, n // tb.shape[0],
                    HAS_MASK=ctx.has_mask, NEED_X=need_x, NEED_V=need_v, NEED_XN=need_xn,
                    CDT=dispatch.compute_dtype(x), BLOCK_R=block_r, BLOCK_A=block_a, enable_fp_fusion=FP_FUSION)
            return gx, gv, gxn

        keep = keep_arg.bool() if ctx.has_mask else None

        def reference(x_, v_, xn_):
            shape = (tb.shape[0], -1, x_.shape[-1])
            return _log_prob_torch(x_.reshape(shape), v_.reshape(shape), xn_.reshape(shape),
                                   tb, dtb, ab, keep).reshape(-1)

        grads = dispatch.backward("flow_sde_log_prob", kernel, lambda: dispatch.reference_grads(
            reference, (x, v, x_next), (g,), (need_x, need_v, need_xn)))
        return grads + (None, None, None, None)


def _log_prob_triton(x, v, x_next, tb, dtb, ab, keep):
    a_dim = x.shape[-1]
    flat = [u.reshape(-1, a_dim).contiguous() for u in (x, v, x_next)]
    lp = _SdeLogProb.apply(*flat, tb, dtb, ab, keep)
    return lp.reshape(x.shape[:-1])


# ------------------------------------------------------------------ public API
def flow_sde_step(x: torch.Tensor, v: torch.Tensor, t: Scalar, dt: Scalar, noise_level: Scalar, xi: torch.Tensor,
                  stochastic_mask: torch.Tensor | None = None, return_entropy: bool = False):
    """One Flow-SDE denoising step from t to t - dt (formulas in the module docstring).

    Args:
        x: current sample x_t, [B, ..., A] (e.g. [B, H, A]), fp16/bf16/fp32/fp64.
        v: predicted velocity at (x_t, t), same shape and dtype as x.
        t, dt: float or [B] tensor (one per batch row); 0 < dt <= t <= 1.
        noise_level: the SDE noise level ``a_noise`` (float or [B]); 0 gives the ODE step.
        xi: standard normal noise, same shape as x.
        stochastic_mask: optional bool [B] or x.shape[:-1]; False rows take the
            deterministic Euler step (std 0, log-prob 0). None = all stochastic.
        return_entropy: also return the per-row Gaussian entropy.

    Returns:
        (x_next, mu, std, log_prob[, entropy]): x_next and mu like x; std
        x.shape[:-1] + (1,) (broadcasts against x); log_prob and entropy
        x.shape[:-1], summed over the last (action) dim. std, log_prob and entropy
        are float32 (float64 for float64 inputs).

    The fused kernel computes no gradients: when autograd needs them (an input
    requires grad) the differentiable torch reference runs instead.
    """
    prepared = _prepare(x, v, "xi", xi, t, dt, noise_level, stochastic_mask)
    if dispatch.needs_grad(x, v, xi, t, dt, noise_level):
        return _step_torch(x, v, xi, *prepared, return_entropy)
    return dispatch.call("flow_sde_step", _step_triton, _step_torch, (x, v, xi),
                         x, v, xi, *prepared, return_entropy)


def flow_sde_step_triton(x, v, t, dt, noise_level, xi, stochastic_mask=None, return_entropy=False):
    """:func:`flow_sde_step` forced through the Triton kernel (tests, benchmarks)."""
    return _step_triton(x, v, xi, *_prepare(x, v, "xi", xi, t, dt, noise_level, stochastic_mask), return_entropy)


def flow_sde_log_prob(x: torch.Tensor, v: torch.Tensor, x_next: torch.Tensor, t: Scalar, dt: Scalar,
                      noise_level: Scalar, stochastic_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Log-prob of a stored step x -> x_next under the Flow-SDE with velocity v (the RL recompute).

    Same inputs and formulas as :func:`flow_sde_step`, with the stored ``x_next``
    in place of ``xi``. Returns log_prob of shape x.shape[:-1] (summed over the
    action dim; 0 for rows with std = 0), float32 (float64 for float64 inputs).
    Differentiable w.r.t. x, v and x_next; t, dt and noise_level are schedule
    constants (if one of them requires grad the torch reference runs).
    With the same x, v and noise this returns the log_prob of flow_sde_step.
    """
    prepared = _prepare(x, v, "x_next", x_next, t, dt, noise_level, stochastic_mask)
    if dispatch.needs_grad(t, dt, noise_level):
        return _log_prob_torch(x, v, x_next, *prepared)
    return dispatch.call("flow_sde_log_prob", _log_prob_triton, _log_prob_torch, (x, v, x_next),
                         x, v, x_next, *prepared)


def flow_sde_log_prob_triton(x, v, x_next, t, dt, noise_level, stochastic_mask=None):
    """:func:`flow_sde_log_prob` forced through the Triton kernels (tests, benchmarks)."""
    return _log_prob_triton(x, v, x_next, *_prepare(x, v, "x_next", x_next, t, dt, noise_level, stochastic_mask))

"""VIB reparameterisation with its KL to N(0, I) (docs/ALGORITHMS.md section 4).

For q(z | e) = N(mu, exp(logvar)) over the last (latent) dim:

    z  = mu + exp(0.5 * logvar) * eps
    kl = 0.5 * sum_latent (exp(logvar) + mu^2 - 1 - logvar)      = KL(q || N(0, I)) per row

One pass reads mu, logvar and eps once and writes z and kl; the backward
recomputes exp(0.5 * logvar) instead of saving it.
"""

from __future__ import annotations

import torch

from . import dispatch
from .dispatch import HAS_TRITON, tl, triton


def _prepare(mu, logvar, eps):
    dispatch.check_float("mu", mu)
    if mu.dim() < 1:
        raise ValueError("mu must have a latent dim")
    dispatch.check_same("logvar", logvar, "mu", mu)
    dispatch.check_same("eps", eps, "mu", mu)


def _vib_torch(mu, logvar, eps):
    cdt = dispatch.torch_compute_dtype(mu)
    m, lv, e = mu.to(cdt), logvar.to(cdt), eps.to(cdt)
    z = m + torch.exp(0.5 * lv) * e
    kl = 0.5 * (torch.exp(lv) + m * m - 1.0 - lv).sum(-1)
    return z.to(mu.dtype), kl


def vib_sample_reference(mu, logvar, eps):
    """Pure-torch :func:`vib_sample` (differentiable by autograd)."""
    _prepare(mu, logvar, eps)
    return _vib_torch(mu, logvar, eps)


if HAS_TRITON:

    @triton.jit
    def _vib_fwd(mu_ptr, lv_ptr, eps_ptr, z_ptr, kl_ptr, N, D, CDT: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        acc = tl.zeros([BLOCK_R], dtype=CDT)
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            m = rmask[:, None] & (cols[None, :] < D)
            offs = rows[:, None] * D + cols[None, :]
            mu = tl.load(mu_ptr + offs, mask=m, other=0.0).to(CDT)
            lv = tl.load(lv_ptr + offs, mask=m, other=0.0).to(CDT)
            e = tl.load(eps_ptr + offs, mask=m, other=0.0).to(CDT)
            tl.store(z_ptr + offs, (mu + tl.exp(0.5 * lv) * e).to(z_ptr.dtype.element_ty), mask=m)
            acc += tl.sum(tl.where(m, tl.exp(lv) + mu * mu - 1.0 - lv, 0.0), axis=1)
        tl.store(kl_ptr + rows, 0.5 * acc, mask=rmask)

    @triton.jit
    def _vib_bwd(mu_ptr, lv_ptr, eps_ptr, gz_ptr, gkl_ptr, gmu_ptr, glv_ptr, geps_ptr, N, D,
                 HAS_GZ: tl.constexpr, HAS_GKL: tl.constexpr, NEED_MU: tl.constexpr, NEED_LV: tl.constexpr,
                 NEED_EPS: tl.constexpr, CDT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        gkl = tl.zeros([BLOCK_R], dtype=CDT)
        if HAS_GKL:
            gkl = tl.load(gkl_ptr + rows, mask=rmask, other=0.0).to(CDT)
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            m = rmask[:, None] & (cols[None, :] < D)
            offs = rows[:, None] * D + cols[None, :]
            mu = tl.load(mu_ptr + offs, mask=m, other=0.0).to(CDT)
            lv = tl.load(lv_ptr + offs, mask=m, other=0.0).to(CDT)
            std = tl.exp(0.5 * lv)
            gz = tl.zeros([BLOCK_R, BLOCK_D], dtype=CDT)
            if HAS_GZ:
                gz = tl.load(gz_ptr + offs, mask=m, other=0.0).to(CDT)
            if NEED_MU:
                tl.store(gmu_ptr + offs, (gz + gkl[:, None] * mu).to(gmu_ptr.dtype.element_ty), mask=m)
            if NEED_LV:
                e = tl.load(eps_ptr + offs, mask=m, other=0.0).to(CDT)
                glv = 0.5 * gz * e * std + 0.5 * gkl[:, None] * (std * std - 1.0)
                tl.store(glv_ptr + offs, glv.to(glv_ptr.dtype.element_ty), mask=m)
            if NEED_EPS:
                tl.store(geps_ptr + offs, (gz * std).to(geps_ptr.dtype.element_ty), mask=m)


class _VibSample(torch.autograd.Function):
    """[N, D] mu, logvar, eps -> (z [N, D], kl [N])."""

    @staticmethod
    def forward(ctx, mu, logvar, eps):
        ctx.set_materialize_grads(False)
        n, d = mu.shape
        z = torch.empty_like(mu)
        kl = torch.empty(n, dtype=dispatch.torch_compute_dtype(mu), device=mu.device)
        block_r, block_d = dispatch.row_blocks(n, d)
        with dispatch.device_guard(mu):
            _vib_fwd[(triton.cdiv(n, block_r),)](mu, logvar, eps, z, kl, n, d, CDT=dispatch.compute_dtype(mu),
                                                 BLOCK_R=block_r, BLOCK_D=block_d)
        ctx.save_for_backward(mu, logvar, eps)
        return z, kl

    @staticmethod
    def backward(ctx, gz, gkl):
        mu, logvar, eps = ctx.saved_tensors
        need_mu, need_lv, need_eps = ctx.needs_input_grad
        need_eps = need_eps and gz is not None  # eps reaches only z
        if gz is None and gkl is None:
            return None, None, None

        def kernel():
            n, d = mu.shape
            gmu = torch.empty_like(mu) if need_mu else mu
            glv = torch.empty_like(logvar) if need_lv else mu
            geps = torch.empty_like(eps) if need_eps else mu
            block_r, block_d = dispatch.row_blocks(n, d)
            with dispatch.device_guard(mu):
                _vib_bwd[(triton.cdiv(n, block_r),)](
                    mu, logvar, eps, gz.contiguous() if gz is not None else mu,
                    gkl.contiguous() if gkl is not None else mu, gmu, glv, geps, n, d,
                    HAS_GZ=gz is not None, HAS_GKL=gkl is not None, NEED_MU=need_mu, NEED_LV=need_lv,
                    NEED_EPS=need_eps, CDT=dispatch.compute_dtype(mu), BLOCK_R=block_r, BLOCK_D=block_d)
            return gmu if need_mu else None, glv if need_lv else None, geps if need_eps else None

        return dispatch.backward("vib_sample", kernel, lambda: dispatch.reference_grads(
            _vib_torch, (mu, logvar, eps), (gz, gkl), (need_mu, need_lv, need_eps)))


def _vib_triton(mu, logvar, eps):
    d = mu.shape[-1]
    z, kl = _VibSample.apply(*(t.reshape(-1, d).contiguous() for t in (mu, logvar, eps)))
    return z.reshape(mu.shape), kl.reshape(mu.shape[:-1])


def vib_sample(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised sample of N(mu, exp(logvar)) and its KL to N(0, I).

    Args: mu, logvar, eps (standard normal noise): same shape [..., dz] and dtype.
    Returns: (z like mu, kl of shape [...] summed over the latent dim, float32 or
    float64 for float64 inputs); differentiable w.r.t. mu, logvar (and eps).
    For the deterministic deployment latent pass eps = zeros (z = mu).
    """
    _prepare(mu, logvar, eps)
    return dispatch.call("vib_sample", _vib_triton, _vib_torch, (mu, logvar, eps), mu, logvar, eps)


def vib_sample_triton(mu, logvar, eps):
    """:func:`vib_sample` forced through the Triton kernels (tests, benchmarks)."""
    _prepare(mu, logvar, eps)
    return _vib_triton(mu, logvar, eps)

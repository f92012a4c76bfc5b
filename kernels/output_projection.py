"""The action expert's output projection with the Euler step fused into its epilogue.

    v      = h @ weight^T + bias            (nn.Linear: weight [A, K], bias [A])
    x_next = x - dt * v                     (this project's step: t -> t - dt, dt > 0)

For ODE sampling (inference) the velocity is only needed to move x, so the
kernel never writes v: it reads h once, accumulates the projection in float32
with tl.dot, and stores x_next. No gradients: under autograd, for float64
(or A > 256) the torch reference runs. Meant for CUDA (bf16/fp16/fp32); CPU
tensors use the reference unless the Triton interpreter is forced (tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dispatch
from .dispatch import HAS_TRITON, tl, triton

MAX_TRITON_OUT = 256  # out features held in one tile


def _prepare(h, weight, bias, x, dt):
    dispatch.check_float("h", h)
    dispatch.check_float("x", x)
    dispatch.check_float("weight", weight)
    if weight.dim() != 2 or weight.shape[1] != h.shape[-1]:
        raise ValueError(f"weight must be [A, K] with K = h.shape[-1] = {h.shape[-1]}, got {tuple(weight.shape)}")
    if x.dim() < 2 or x.shape[:-1] != h.shape[:-1] or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"x must be h.shape[:-1] + (A,) = {tuple(h.shape[:-1]) + (weight.shape[0],)}, "
                         f"got {tuple(x.shape)}")
    if bias is not None:
        dispatch.check_float("bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    for name, t in (("h", h), ("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, expected {x.device} like x")
    return dispatch.per_batch("dt", dt, x.shape[0], x, torch.float64 if x.dtype == torch.float64 else torch.float32)


def _euler_torch(h, weight, bias, x, dtb):
    v = F.linear(h, weight, bias)
    dt = dtb.view((x.shape[0],) + (1,) * (x.dim() - 1))
    return (x.to(dtb.dtype) - dt * v.to(dtb.dtype)).to(x.dtype)


def euler_projection_reference(h, weight, bias, x, dt):
    """Pure-torch :func:`euler_projection`."""
    return _euler_torch(h, weight, bias, x, _prepare(h, weight, bias, x, dt))


if HAS_TRITON:

    @triton.jit
    def _euler_proj_kernel(h_ptr, w_ptr, b_ptr, x_ptr, dt_ptr, out_ptr, M, N, K, R,
                           HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        rmask = rows < M
        cmask = cols < N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < K
            a = tl.load(h_ptr + rows[:, None] * K + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            w = tl.load(w_ptr + cols[None, :] * K + ks[:, None], mask=kmask[:, None] & cmask[None, :], other=0.0)
            if IEEE:  # fp32 inputs: full precision, as torch's fp32 matmul (no TF32)
                acc = tl.dot(a, w, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, w, acc)
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        dt = tl.load(dt_ptr + rows // R, mask=rmask, other=0.0).to(tl.float32)
        m = rmask[:, None] & cmask[None, :]
        offs = rows[:, None] * N + cols[None, :]
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, (x - dt[:, None] * acc).to(out_ptr.dtype.element_ty), mask=m)


def _euler_triton(h, weight, bias, x, dtb):
    a_dim, k_dim = weight.shape
    hc = h.reshape(-1, k_dim).contiguous()
    xc = x.contiguous()
    w = weight.to(h.dtype).contiguous()
    out = torch.empty_like(xc)
    m = hc.shape[0]
    interp = dispatch.interpreting()
    block_m = 128 if interp else 32
    block_n = max(16, triton.next_power_of_2(a_dim))
    block_k = max(16, min(128, triton.next_power_of_2(k_dim)))
    with dispatch.device_guard(x):
        _euler_proj_kernel[(triton.cdiv(m, block_m),)](
            hc, w, bias if bias is not None else w, xc, dtb, out, m, a_dim, k_dim, m // x.shape[0],
            HAS_BIAS=bias is not None, IEEE=h.dtype == torch.float32, BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_K=block_k, num_warps=4)
    return out


def euler_projection(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor,
                     dt: float | torch.Tensor) -> torch.Tensor:
    """x - dt * (h @ weight^T + bias), the fused last projection + Euler step (inference).

    Args:
        h: action-expert hidden states [B, ..., K] (e.g. [B, H, K]).
        weight: [A, K] (nn.Linear layout); bias: [A] or None.
        x: the current sample [B, ..., A]; dt: float or [B], positive (t -> t - dt).
    Returns: x_next like x (x's dtype). Not differentiable (see module docstring).
    """
    dtb = _prepare(h, weight, bias, x, dt)
    if (dispatch.needs_grad(h, weight, bias, x, dt) or x.dtype == torch.float64 or h.dtype == torch.float64
            or weight.shape[0] > MAX_TRITON_OUT):
        return _euler_torch(h, weight, bias, x, dtb)
    return dispatch.call("euler_projection", _euler_triton, _euler_torch, (h, weight, bias, x),
                         h, weight, bias, x, dtb)


def euler_projection_triton(h, weight, bias, x, dt):
    """:func:`euler_projection` forced through the Triton kernel (tests, benchmarks)."""
    return _euler_triton(h, weight, bias, x, _prepare(h, weight, bias, x, dt))

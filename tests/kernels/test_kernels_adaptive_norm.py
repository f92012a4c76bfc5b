"""Adaptive RMSNorm, gated residual and their fusion: Triton vs reference, gradcheck."""

import pytest
import torch
from kernel_checks import DTYPES, close, grads, leaves, tol

from vla.kernels import adaptive_norm as N

# [B, T, D]: single token, odd sizes, many tokens of a non-power-of-two width, a long row.
SHAPES = [(1, 1, 7), (3, 5, 13), (2, 77, 96), (2, 3, 1500)]
OPTIONS = {"all": (True, True, True), "no_weight": (False, True, True), "weight_only": (True, False, False)}
FWD = (1e-5, 1e-5)
BWD = (1e-4, 1e-6)


def _norm_inputs(shape, dtype, device, with_w, with_scale, with_shift, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, _, d = shape

    def r(*s, k=1.0):
        return (k * torch.randn(*s, generator=g, dtype=dtype)).to(device)

    return r(*shape), r(d) if with_w else None, r(b, d, k=0.3) if with_scale else None, \
        r(b, d) if with_shift else None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_ada_rms_norm_matches_reference(shape, dtype, option, device):
    inputs = _norm_inputs(shape, dtype, device, *OPTIONS[option])
    a, b = leaves(*inputs), leaves(*inputs)
    out_t = N.ada_rms_norm_triton(*a, eps=1e-6, weight_offset=1.0)
    out_r = N.ada_rms_norm_reference(*b, eps=1e-6, weight_offset=1.0)
    close(out_t, out_r, what="out", **tol(dtype, *FWD))
    g = torch.randn_like(out_r)
    out_t.backward(g)
    out_r.backward(g)
    for name, ga, gb in zip(["x", "weight", "scale", "shift"], grads(a), grads(b)):
        if gb is not None:
            close(ga, gb, what=f"grad {name}", **tol(dtype, *BWD))


def test_ada_rms_norm_semantics(device):
    x, w, scale, shift = _norm_inputs((2, 3, 8), torch.float64, device, True, True, True)
    rms = x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    expected = x / rms * w * (1 + scale[:, None]) + shift[:, None]
    close(N.ada_rms_norm_triton(x, w, scale, shift, eps=1e-6), expected, atol=1e-12, rtol=1e-12)
    # Gemma stores its weight as an offset from 1.
    close(N.ada_rms_norm_triton(x, w, eps=1e-6, weight_offset=1.0), x / rms * (1 + w), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gated", [True, False])
def test_fused_residual_norm_matches_reference(shape, dtype, gated, device):
    g = torch.Generator().manual_seed(1)
    b, _, d = shape
    residual, y = (torch.randn(shape, generator=g, dtype=dtype).to(device) for _ in range(2))
    gate = torch.randn(b, d, generator=g, dtype=dtype).to(device) if gated else None
    _, w, scale, shift = _norm_inputs(shape, dtype, device, True, True, True, seed=2)
    a, bb = leaves(residual, y, gate, w, scale, shift), leaves(residual, y, gate, w, scale, shift)
    h_t, out_t = N.gated_residual_ada_rms_norm_triton(*a)
    h_r, out_r = N.gated_residual_ada_rms_norm_reference(*bb)
    close(h_t, h_r, what="h", **tol(dtype, *FWD))
    close(out_t, out_r, what="out", **tol(dtype, *FWD))
    g_h, g_out = torch.randn_like(h_r), torch.randn_like(out_r)
    torch.autograd.backward([h_t, out_t], [g_h, g_out])
    torch.autograd.backward([h_r, out_r], [g_h, g_out])
    for name, ga, gb in zip(["residual", "y", "gate", "weight", "scale", "shift"], grads(a), grads(bb)):
        if gb is not None:
            close(ga, gb, what=f"grad {name}", **tol(dtype, *BWD))


def test_fused_with_only_one_output_used(device):
    """Only the normalised output (or only h) feeds the loss: the other grad is None inside."""
    residual, y = torch.randn(2, 5, 6, device=device), torch.randn(2, 5, 6, device=device)
    gate = torch.randn(2, 6, device=device)
    for pick in (0, 1):
        a, b = leaves(residual, y, gate), leaves(residual, y, gate)
        N.gated_residual_ada_rms_norm_triton(*a)[pick].pow(2).sum().backward()
        N.gated_residual_ada_rms_norm_reference(*b)[pick].pow(2).sum().backward()
        for ga, gb in zip(grads(a), grads(b)):
            close(ga, gb, atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gated_residual_matches_reference(shape, dtype, device):
    g = torch.Generator().manual_seed(3)
    residual, y = (torch.randn(shape, generator=g, dtype=dtype).to(device) for _ in range(2))
    gate = torch.randn(shape[0], shape[2], generator=g, dtype=dtype).to(device)
    a, b = leaves(residual, y, gate), leaves(residual, y, gate)
    h_t, h_r = N.gated_residual_triton(*a), N.gated_residual_reference(*b)
    close(h_t, h_r, what="h", **tol(dtype, *FWD))
    close(h_r, residual + gate[:, None] * y, what="semantics", **tol(dtype, *FWD))
    g_out = torch.randn_like(h_r)
    h_t.backward(g_out)
    h_r.backward(g_out)
    for name, ga, gb in zip(["residual", "y", "gate"], grads(a), grads(b)):
        close(ga, gb, what=f"grad {name}", **tol(dtype, *BWD))


@pytest.fixture
def small64(device):
    x, w, scale, shift = _norm_inputs((2, 2, 3), torch.float64, device, True, True, True, seed=5)
    return x, torch.randn_like(x), torch.randn_like(scale), w, scale, shift


def test_norm_gradcheck_fp64(small64):
    x, _, _, w, scale, shift = small64
    assert torch.autograd.gradcheck(lambda *u: N.ada_rms_norm_triton(*u, eps=1e-6, weight_offset=0.5),
                                    leaves(x, w, scale, shift))


def test_fused_gradcheck_fp64(small64):
    assert torch.autograd.gradcheck(lambda *u: N.gated_residual_ada_rms_norm_triton(*u, eps=1e-6),
                                    leaves(*small64))


def test_gated_residual_gradcheck_fp64(small64):
    x, y, gate = small64[:3]
    assert torch.autograd.gradcheck(N.gated_residual_triton, leaves(x, y, gate))


def test_bad_inputs():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"x must have shape \[B, T, D\]"):
        N.ada_rms_norm(torch.randn(3, 4))
    with pytest.raises(ValueError, match="scale must have shape"):
        N.ada_rms_norm(x, None, torch.randn(2, 5))
    with pytest.raises(ValueError, match="gate must have shape"):
        N.gated_residual(x, x, torch.randn(4))

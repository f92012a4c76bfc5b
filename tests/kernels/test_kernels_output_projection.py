"""Output projection with the fused Euler step: fp32 through the interpreter, bf16 on a GPU."""

import pytest
import torch
from kernel_checks import close

from vla.kernels import output_projection as E

# (B, H, K, A): single row, odd sizes, pi0-like (narrow K to keep the interpreter quick).
SHAPES = [(1, 1, 20, 7), (3, 5, 70, 13), (2, 50, 96, 32)]


def _inputs(b, h, k, a, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    hid = torch.randn(b, h, k, generator=g)
    w = torch.randn(a, k, generator=g) / k ** 0.5
    bias = torch.randn(a, generator=g)
    x = torch.randn(b, h, a, generator=g)
    dt = torch.rand(b, generator=g) * 0.2
    return [t.to(device=device, dtype=dtype) for t in (hid, w, bias, x)] + [dt.to(device)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_fp32_matches_reference(shape, with_bias, device):
    h, w, bias, x, dt = _inputs(*shape, torch.float32, device)
    bias = bias if with_bias else None
    got = E.euler_projection_triton(h, w, bias, x, dt)
    want = E.euler_projection_reference(h, w, bias, x, dt)
    close(got, want, atol=1e-5, rtol=1e-5)
    v = h @ w.T + (bias if bias is not None else 0)
    close(want, x - dt[:, None, None] * v, atol=1e-5, rtol=1e-5)


def test_cpu_dispatch_uses_reference(monkeypatch):
    h, w, bias, x, dt = _inputs(*SHAPES[1], torch.float32, "cpu")
    monkeypatch.setattr(E, "_euler_triton", lambda *a: pytest.fail("Triton path on CPU without forcing"))
    close(E.euler_projection(h, w, bias, x, 0.1), E.euler_projection_reference(h, w, bias, x, 0.1), atol=0, rtol=0)


def test_bad_inputs():
    h, w, bias, x, dt = _inputs(*SHAPES[1], torch.float32, "cpu")
    with pytest.raises(ValueError, match="weight must be"):
        E.euler_projection(h, w[:, :5], bias, x, dt)
    with pytest.raises(ValueError, match="x must be"):
        E.euler_projection(h, w, bias, x[..., :3], dt)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(32, 50, 1024, 32), (3, 5, 70, 13)])
def test_bf16_on_gpu(shape):
    h, w, bias, x, dt = _inputs(*shape, torch.bfloat16, "cuda")
    got = E.euler_projection_triton(h, w, bias, x, dt)
    want = E.euler_projection_reference(h.float(), w.float(), bias.float(), x.float(), dt)
    close(got.float(), want, atol=2e-2, rtol=2e-2)

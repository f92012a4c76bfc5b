"""VIB reparameterisation and KL: Triton vs reference, closed-form KL, gradcheck."""

import pytest
import torch
from kernel_checks import DTYPES, close, grads, leaves, tol

from vla.kernels import vib as V

SHAPES = [(1, 7), (5, 13), (256, 32), (2, 1500), (3, 4, 16)]


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g, dtype=dtype)
    logvar = 0.5 * torch.randn(shape, generator=g, dtype=dtype)
    eps = torch.randn(shape, generator=g, dtype=dtype)
    return mu.to(device), logvar.to(device), eps.to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, dtype, device):
    inputs = _inputs(shape, dtype, device)
    a, b = leaves(*inputs), leaves(*inputs)
    z_t, kl_t = V.vib_sample_triton(*a)
    z_r, kl_r = V.vib_sample_reference(*b)
    k = tol(dtype, 1e-5, 1e-5)
    close(z_t, z_r, what="z", **k)
    close(kl_t, kl_r, what="kl", **k)
    assert kl_t.shape == shape[:-1]
    g_z, g_kl = torch.randn_like(z_r), torch.randn_like(kl_r)
    torch.autograd.backward([z_t, kl_t], [g_z, g_kl])
    torch.autograd.backward([z_r, kl_r], [g_z, g_kl])
    for name, ga, gb in zip(["mu", "logvar", "eps"], grads(a), grads(b)):
        close(ga, gb, what=f"grad {name}", **k)


def test_kl_is_the_closed_form_of_torch_distributions(device):
    mu, logvar, eps = _inputs((4, 16), torch.float64, device)
    z, kl = V.vib_sample_triton(mu, logvar, eps)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    close(kl, torch.distributions.kl_divergence(q, p).sum(-1), atol=1e-12, rtol=1e-12)
    close(z, mu + torch.exp(0.5 * logvar) * eps, atol=1e-12, rtol=1e-12)
    z0, kl0 = V.vib_sample_triton(torch.zeros_like(mu), torch.zeros_like(mu), torch.zeros_like(mu))
    assert torch.all(z0 == 0) and torch.all(kl0 == 0)


def test_only_kl_or_only_z_used(device):
    for pick in (0, 1):
        inputs = _inputs((3, 8), torch.float32, device)
        a, b = leaves(*inputs), leaves(*inputs)
        V.vib_sample_triton(*a)[pick].pow(2).sum().backward()
        V.vib_sample_reference(*b)[pick].pow(2).sum().backward()
        for ga, gb in zip(grads(a), grads(b)):
            close(ga, gb, atol=1e-5, rtol=1e-5)


def test_gradcheck_fp64(device):
    inputs = leaves(*_inputs((2, 5), torch.float64, device, seed=3))
    assert torch.autograd.gradcheck(V.vib_sample_triton, inputs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="logvar has shape"):
        V.vib_sample(torch.randn(2, 4), torch.randn(2, 5), torch.randn(2, 4))

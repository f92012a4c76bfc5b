"""Gaussian log-prob of a stored step: Triton vs reference, std = 0 and mask semantics, gradcheck."""

import pytest
import torch
from kernel_checks import DTYPES, close, grads, leaves, tol

from vla.kernels import gaussian_log_prob as G

# (x shape, std shape): per-row std like flow_sde_step returns, per element, broadcast over steps.
CASES = [((1, 1, 7), (1, 1, 1)), ((3, 5, 13), (3, 5, 13)), ((4, 50, 32), (4, 50, 1)),
         ((2, 1, 1500), (2, 1, 1)), ((3, 6, 9), (3, 1, 1)), ((3, 6, 9), (9,))]


def _inputs(x_shape, std_shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(x_shape, generator=g, dtype=dtype)
    std = torch.rand(std_shape, generator=g, dtype=dtype) + 0.5
    x = mu + std * torch.randn(x_shape, generator=g, dtype=dtype)
    mask = torch.rand(x_shape[:-1], generator=g) > 0.3
    return x.to(device), mu.to(device), std.to(device), mask.to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,std_shape", CASES)
@pytest.mark.parametrize("use_mask", [True, False])
def test_matches_reference(x_shape, std_shape, dtype, use_mask, device):
    x, mu, std, mask = _inputs(x_shape, std_shape, dtype, device)
    mask = mask if use_mask else None
    a, b = leaves(x, mu, std), leaves(x, mu, std)
    lp_t = G.flow_gaussian_log_prob_triton(*a, mask)
    lp_r = G.flow_gaussian_log_prob_reference(*b, mask)
    assert lp_t.shape == x_shape[:-1]
    close(lp_t, lp_r, what="log_prob", **tol(dtype, 1e-4, 1e-5))
    g = torch.randn_like(lp_r)
    lp_t.backward(g)
    lp_r.backward(g)
    for name, ga, gb in zip(["x_next", "mu", "std"], grads(a), grads(b)):
        assert ga.shape == gb.shape
        # std's grad is a sum over the action dim (and over steps when broadcast): the sum tolerance.
        close(ga, gb, what=f"grad {name}", **tol(dtype, 1e-4 if name == "std" else 1e-6, 1e-5))


@pytest.mark.parametrize("std_shape", [(2, 3, 1), (2, 3, 4)])
def test_gradcheck_fp64(std_shape, device):
    x, mu, std, mask = _inputs((2, 3, 4), std_shape, torch.float64, device, seed=3)
    assert torch.autograd.gradcheck(lambda *u: G.flow_gaussian_log_prob_triton(*u, mask), leaves(x, mu, std))


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_equals_torch_normal_and_zero_std_contributes_nothing(path, device):
    fn = G.flow_gaussian_log_prob_triton if path == "triton" else G.flow_gaussian_log_prob_reference
    x, mu, std, _ = _inputs((3, 5, 6), (3, 5, 6), torch.float64, device)
    close(fn(x, mu, std), torch.distributions.Normal(mu, std).log_prob(x).sum(-1), atol=1e-10, rtol=1e-10)
    std = std.clone()
    std[0, 0, :] = 0.0  # a deterministic step
    std[1, 2, :2] = 0.0  # two deterministic dims
    a = leaves(x, mu, std)
    lp = fn(*a)
    assert lp[0, 0].item() == 0.0
    keep = std[1, 2] > 0
    close(lp[1, 2], torch.distributions.Normal(mu[1, 2, keep], std[1, 2, keep]).log_prob(x[1, 2, keep]).sum(),
          atol=1e-10, rtol=1e-10)
    lp.sum().backward()
    for t in a:
        assert torch.all(t.grad[0, 0] == 0) and torch.all(t.grad[1, 2, :2] == 0)
        assert torch.all(torch.isfinite(t.grad))


def test_masked_rows_give_zero_and_no_grad(device):
    x, mu, std, mask = _inputs((3, 5, 6), (3, 5, 1), torch.float32, device)
    a = leaves(x, mu, std)
    lp = G.flow_gaussian_log_prob_triton(*a, mask)
    assert torch.all(lp[~mask] == 0) and torch.all(lp[mask] != 0)
    lp.sum().backward()
    assert torch.all(a[1].grad[~mask] == 0) and torch.all(a[2].grad[~mask] == 0)


def test_bad_inputs():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="does not broadcast"):
        G.flow_gaussian_log_prob(x, x, torch.ones(2, 3, 2))
    with pytest.raises(TypeError, match="std must have"):
        G.flow_gaussian_log_prob(x, x, torch.ones(2, 3, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="mu has shape"):
        G.flow_gaussian_log_prob(x, x[:, :2], torch.ones(2, 3, 1))

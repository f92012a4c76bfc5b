"""Flow-SDE step and log-prob recompute: Triton vs reference, and docs/ALGORITHMS.md section 1 properties."""

import math

import pytest
import torch
from kernel_checks import DTYPES, close, grads, leaves, tol

from vla.kernels import flow_sde as F
from vla.kernels import policy_loss

# [B, H, A]: a single row, odd sizes, pi0-like, and a row longer than one 1024 block.
SHAPES = [(1, 1, 7), (3, 5, 13), (4, 50, 32), (2, 1, 1500)]


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = shape[0]
    x, v, xi = (torch.randn(shape, generator=g, dtype=dtype).to(device) for _ in range(3))
    t = (torch.rand(b, generator=g, dtype=dtype) * 0.8 + 0.15).to(device)
    t[0] = 1.0  # the first denoising step: the t = 1 branch of sigma
    dt = torch.full((b,), 0.1, dtype=dtype, device=device)
    mask = (torch.rand(shape[:-1], generator=g) > 0.3).to(device)
    return x, v, xi, t, dt, mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mask_kind", ["rows", "batch", "none"])
def test_step_matches_reference(shape, dtype, mask_kind, device):
    x, v, xi, t, dt, mask = _inputs(shape, dtype, device)
    mask = {"rows": mask, "batch": mask[:, 0], "none": None}[mask_kind]
    got = F.flow_sde_step_triton(x, v, t, dt, 0.5, xi, mask, return_entropy=True)
    want = F.flow_sde_step_reference(x, v, t, dt, 0.5, xi, mask, return_entropy=True)
    elem, summed = tol(dtype, 1e-6, 1e-5), tol(dtype, 1e-4, 1e-5)
    for name, a, b, k in zip(["x_next", "mu", "std", "log_prob", "entropy"], got, want,
                             [elem, elem, elem, summed, summed]):
        assert a.shape == b.shape, name
        close(a, b, what=name, **k)
    assert got[2].shape == shape[:-1] + (1,) and got[3].shape == shape[:-1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_log_prob_recompute_matches_reference(shape, dtype, device):
    x, v, xi, t, dt, mask = _inputs(shape, dtype, device, seed=1)
    x_next = F.flow_sde_step_reference(x, v, t, dt, 0.5, xi, mask)[0]
    # Perturb v so x_next is not exactly the mean's sample: non-trivial gradients.
    v = v + 0.1 * torch.randn_like(v)
    a, b = leaves(x, v, x_next), leaves(x, v, x_next)
    lp_t = F.flow_sde_log_prob_triton(*a, t, dt, 0.5, mask)
    lp_r = F.flow_sde_log_prob_reference(*b, t, dt, 0.5, mask)
    close(lp_t, lp_r, what="log_prob", **tol(dtype, 1e-4, 1e-5))
    g = torch.randn_like(lp_r)
    lp_t.backward(g)
    lp_r.backward(g)
    for name, ga, gb in zip(["x", "v", "x_next"], grads(a), grads(b)):
        close(ga, gb, what=f"grad {name}", **tol(dtype, 1e-6, 1e-5))


def test_log_prob_gradcheck_fp64(device):
    x, v, xi, t, dt, mask = _inputs((2, 3, 5), torch.float64, device, seed=2)
    x_next = F.flow_sde_step_reference(x, v, t, dt, 0.5, xi, mask)[0] + 0.05
    inputs = leaves(x, v, x_next)
    assert torch.autograd.gradcheck(lambda *u: F.flow_sde_log_prob_triton(*u, t, dt, 0.5, mask), inputs)


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_zero_noise_is_exactly_the_euler_step(path, device):
    x, v, xi, t, dt, _ = _inputs((3, 5, 13), torch.float32, device)
    step = F.flow_sde_step_triton if path == "triton" else F.flow_sde_step_reference
    x_next, mu, std, lp, ent = step(x, v, t, dt, 0.0, xi, return_entropy=True)
    euler = x - dt[:, None, None] * v
    assert torch.equal(x_next, euler) and torch.equal(mu, euler)
    assert torch.all(std == 0) and torch.all(lp == 0) and torch.all(ent == 0)


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_noise_level_to_zero_converges_to_euler(path, device):
    x, v, xi, t, dt, _ = _inputs((3, 5, 13), torch.float64, device)
    step = F.flow_sde_step_triton if path == "triton" else F.flow_sde_step_reference
    euler = x - dt[:, None, None] * v
    errors = [(step(x, v, t, dt, a, xi)[0] - euler).abs().max().item() for a in (1e-1, 1e-2, 1e-3)]
    assert errors[0] > errors[1] > errors[2] > 0
    assert errors[2] < 1e-2


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_masked_rows_are_euler_and_contribute_nothing(path, device):
    x, v, xi, t, dt, mask = _inputs((4, 50, 32), torch.float32, device)
    step = F.flow_sde_step_triton if path == "triton" else F.flow_sde_step_reference
    x_next, _, std, lp, ent = step(x, v, t, dt, 0.5, xi, mask, return_entropy=True)
    euler = x - dt[:, None, None] * v
    off = ~mask
    assert off.any() and mask.any()
    assert torch.equal(x_next[off], euler[off])
    assert torch.all(lp[off] == 0) and torch.all(ent[off] == 0) and torch.all(std[off] == 0)
    assert torch.all(lp[mask] != 0) and not torch.allclose(x_next[mask], euler[mask])


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_log_prob_equals_torch_normal(path, device):
    x, v, xi, t, dt, _ = _inputs((3, 5, 13), torch.float64, device)
    step = F.flow_sde_step_triton if path == "triton" else F.flow_sde_step_reference
    x_next, mu, std, lp, ent = step(x, v, t, dt, 0.5, xi, return_entropy=True)
    normal = torch.distributions.Normal(mu, std)
    close(lp, normal.log_prob(x_next).sum(-1), atol=1e-10, rtol=1e-10, what="log_prob")
    close(ent, normal.entropy().sum(-1), atol=1e-10, rtol=1e-10, what="entropy")


def test_formula_and_first_step_reading(device):
    """sigma_t = a sqrt(t / (1 - t)); at t = 1 the denominator uses t - dt, so std = a there."""
    shape = (2, 3, 4)
    x, v, xi = (torch.randn(shape, dtype=torch.float64, device=device) for _ in range(3))
    a, dt = 0.5, 0.1
    t = torch.tensor([1.0, 0.6], dtype=torch.float64, device=device)
    for step in (F.flow_sde_step_triton, F.flow_sde_step_reference):
        x_next, mu, std, _ = step(x, v, t, dt, a, xi)
        sigma = torch.tensor([a * math.sqrt(1.0 / dt), a * math.sqrt(0.6 / 0.4)], dtype=torch.float64,
                             device=device)
        close(std[:, 0, 0], sigma * math.sqrt(dt), atol=1e-12, rtol=1e-12, what="std")
        coef = (sigma ** 2 / (2 * t))[:, None, None]
        tt = t[:, None, None]
        close(mu, x - dt * (v + coef * (x + (1 - tt) * v)), atol=1e-12, rtol=1e-12, what="mu")
        close(x_next, mu + std * xi, atol=1e-12, rtol=1e-12, what="x_next")


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_recompute_gives_ratio_exactly_one(path, device):
    """Same parameters as at rollout time: the recomputed log-prob is bit-identical, ratio 1."""
    x, v, xi, t, dt, mask = _inputs((4, 50, 32), torch.float32, device)
    step = F.flow_sde_step_triton if path == "triton" else F.flow_sde_step_reference
    recompute = F.flow_sde_log_prob_triton if path == "triton" else F.flow_sde_log_prob_reference
    x_next, _, _, lp_old = step(x, v, t, dt, 0.5, xi, mask)
    lp_new = recompute(x, v, x_next, t, dt, 0.5, mask)
    assert torch.equal(lp_new, lp_old)
    _, stats = policy_loss.clipped_policy_loss_reference(lp_new, lp_old, torch.randn_like(lp_old))
    assert stats["ratio_mean"].item() == 1.0 and stats["clip_fraction"].item() == 0.0


def test_mixed_mode_chain_log_prob_is_the_stochastic_step(device):
    """Mixed mode: one stochastic step per rollout; the ODE steps add exactly 0."""
    b, h, a_dim, k = 3, 5, 7, 4
    x = torch.randn(b, h, a_dim, device=device)
    chosen = torch.tensor([0, 2, 3], device=device)
    total = torch.zeros(b, h, device=device)
    per_step = []
    for step in range(k):
        t = torch.full((b,), 1.0 - step / k, device=device)
        v = torch.randn_like(x)
        stochastic = chosen == step
        x, _, _, lp = F.flow_sde_step_triton(x, v, t, 1.0 / k, 0.5, torch.randn_like(x), stochastic)
        per_step.append(lp)
        total = total + lp
    for i in range(b):
        assert torch.equal(total[i], per_step[chosen[i]][i])


def test_step_bad_inputs_name_the_argument():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="v has shape"):
        F.flow_sde_step(x, torch.randn(2, 3, 5), 1.0, 0.1, 0.5, torch.randn_like(x))
    with pytest.raises(ValueError, match="t must be"):
        F.flow_sde_step(x, x, torch.ones(3), 0.1, 0.5, torch.randn_like(x))
    with pytest.raises(TypeError, match="stochastic_mask must be a bool"):
        F.flow_sde_step(x, x, 1.0, 0.1, 0.5, x, torch.ones(2))
    with pytest.raises(ValueError, match="stochastic_mask must have shape"):
        F.flow_sde_step(x, x, 1.0, 0.1, 0.5, x, torch.ones(3, dtype=torch.bool))


def test_step_under_autograd_uses_differentiable_reference(monkeypatch):
    x, v, xi, t, dt, mask = _inputs((2, 3, 4), torch.float64, "cpu")
    monkeypatch.setenv("VLA_KERNELS", "triton")
    v = v.requires_grad_()
    x_next, mu, std, lp = F.flow_sde_step(x, v, t, dt, 0.5, xi, mask)
    mu.sum().backward()
    assert v.grad is not None and torch.all(v.grad != 0)

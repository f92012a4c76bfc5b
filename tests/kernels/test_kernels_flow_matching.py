"""Flow-matching interpolant and masked MSE loss: Triton vs reference, masking, gradcheck."""

import pytest
import torch
from kernel_checks import DTYPES, close, grads, leaves, tol

from vla.kernels import flow_matching as FM

SHAPES = [(1, 1, 7), (3, 5, 13), (4, 50, 32), (2, 1, 1500)]


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    v, actions, noise = (torch.randn(shape, generator=g, dtype=dtype).to(device) for _ in range(3))
    mask = (torch.rand(shape[:-1], generator=g) > 0.3).to(device)
    mask.view(-1)[0] = True
    return v, actions, noise, mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_mask", [True, False])
def test_loss_matches_reference(shape, dtype, use_mask, device):
    v, actions, noise, mask = _inputs(shape, dtype, device)
    mask = mask if use_mask else None
    a, b = leaves(v, actions, noise), leaves(v, actions, noise)
    loss_t = FM.flow_matching_loss_triton(*a, mask)
    loss_r = FM.flow_matching_loss_reference(*b, mask)
    assert loss_t.shape == ()
    close(loss_t, loss_r, what="loss", **tol(dtype, 1e-6, 1e-5))
    loss_t.backward()
    loss_r.backward()
    for name, ga, gb in zip(["v_pred", "actions", "noise"], grads(a), grads(b)):
        close(ga, gb, what=f"grad {name}", **tol(dtype, 1e-6, 1e-5))


def test_loss_semantics(device):
    """Mean over action dims, then over valid steps only; padded steps get no gradient."""
    v, actions, noise, mask = _inputs((3, 5, 4), torch.float64, device)
    per_step = (v - (noise - actions)).pow(2).mean(-1)
    expected = per_step[mask].mean()
    vv = v.clone().requires_grad_()
    loss = FM.flow_matching_loss_triton(vv, actions, noise, mask)
    close(loss, expected, atol=1e-12, rtol=1e-12)
    loss.backward()
    assert torch.all(vv.grad[~mask] == 0) and torch.all(vv.grad[mask] != 0)
    # No valid step: the loss is 0 (not NaN) and so is the gradient.
    none = torch.zeros_like(mask)
    vv.grad = None
    loss = FM.flow_matching_loss_triton(vv, actions, noise, none)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(vv.grad == 0)


def test_loss_gradcheck_fp64(device):
    v, actions, noise, mask = _inputs((2, 3, 5), torch.float64, device, seed=4)
    assert torch.autograd.gradcheck(lambda *u: FM.flow_matching_loss_triton(*u, mask), leaves(v, actions, noise))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_interpolate_matches_reference(shape, dtype, device):
    _, actions, noise, _ = _inputs(shape, dtype, device)
    t = torch.rand(shape[0], dtype=dtype, device=device)
    got = FM.flow_interpolate_triton(actions, noise, t)
    close(got, FM.flow_interpolate_reference(actions, noise, t), what="x_t", **tol(dtype, 1e-6, 1e-5))
    # t = 1 is pure noise, t = 0 the data (openpi convention).
    ends = torch.tensor([1.0] + [0.0] * (shape[0] - 1), dtype=dtype, device=device)
    x_t = FM.flow_interpolate_triton(actions, noise, ends)
    assert torch.equal(x_t[0], noise[0]) and torch.equal(x_t[1:], actions[1:])


def test_interpolate_float_t_and_autograd(device):
    _, actions, noise, _ = _inputs((2, 3, 4), torch.float64, device)
    close(FM.flow_interpolate_triton(actions, noise, 0.25), 0.25 * noise + 0.75 * actions, atol=1e-12, rtol=0)
    t = torch.tensor([0.3, 0.6], dtype=torch.float64, device=device, requires_grad=True)
    FM.flow_interpolate(actions, noise, t).sum().backward()  # under autograd: the reference, grads to t
    close(t.grad, (noise - actions).sum((1, 2)), atol=1e-12, rtol=1e-12)


def test_bad_inputs():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="actions must match"):
        FM.flow_matching_loss(x, torch.randn(2, 3, 5), x)
    with pytest.raises(ValueError, match="mask must have shape"):
        FM.flow_matching_loss(x, x, x, torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="t must be"):
        FM.flow_interpolate(x, x, torch.ones(3))

"""Clipped PPO / GRPO loss: Triton vs reference, clip / dual-clip / KL semantics, gradcheck."""

import pytest
import torch
from kernel_checks import DTYPES, close, tol

from vla.kernels import policy_loss as P

SHAPES = [(1,), (7, 13), (64, 50), (3, 1500)]
VARIANTS = {
    "plain": {},
    "masked_dual_kl": {"dual_clip": 3.0, "kl_coef": 0.1, "use_ref": True, "use_mask": True},
    "symmetric_masked": {"clip_low": 0.2, "clip_high": 0.2, "use_mask": True},
}


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    new = 0.3 * torch.randn(shape, generator=g, dtype=dtype)
    old = new + 0.3 * torch.randn(shape, generator=g, dtype=dtype)
    adv = torch.randn(shape, generator=g, dtype=dtype)
    ref = new + 0.2 * torch.randn(shape, generator=g, dtype=dtype)
    mask = torch.rand(shape, generator=g) > 0.2
    mask.view(-1)[0] = True
    return [t.to(device) for t in (new, old, adv, ref, mask)]


def _kwargs(variant, ref, mask):
    kw = dict(VARIANTS[variant])
    kw["logp_ref"] = ref if kw.pop("use_ref", False) else None
    kw["mask"] = mask if kw.pop("use_mask", False) else None
    return kw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_reference(shape, dtype, variant, device):
    new, old, adv, ref, mask = _inputs(shape, dtype, device)
    kw = _kwargs(variant, ref, mask)
    a, b = new.clone().requires_grad_(), new.clone().requires_grad_()
    loss_t, stats_t = P.clipped_policy_loss_triton(a, old, adv, **kw)
    loss_r, stats_r = P.clipped_policy_loss_reference(b, old, adv, **kw)
    k = tol(dtype, 1e-5, 1e-5)
    close(loss_t, loss_r, what="loss", **k)
    assert sorted(stats_t) == sorted(stats_r)
    for name in stats_r:
        assert stats_t[name].dtype == torch.float32 and not stats_t[name].requires_grad
        close(stats_t[name], stats_r[name], what=name, atol=1e-5, rtol=1e-5)
    loss_t.backward()
    loss_r.backward()
    close(a.grad, b.grad, what="grad logp_new", **k)


def test_semantics_by_hand(device):
    """Each regime on a hand-made element: unclipped, clipped high / low, dual clip, masked."""
    d = torch.float64
    ratio = torch.tensor([1.1, 1.5, 0.5, 5.0, 1.5], dtype=d, device=device)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0], dtype=d, device=device)
    mask = torch.tensor([True, True, True, True, False], device=device)
    old = torch.zeros(5, dtype=d, device=device)
    new = torch.log(ratio).requires_grad_()
    for fn in (P.clipped_policy_loss_triton, P.clipped_policy_loss_reference):
        new.grad = None
        loss, stats = fn(new, old, adv, clip_low=0.2, clip_high=0.28, dual_clip=3.0, mask=mask)
        # per element: -1.1 (unclipped), -1.28 (clipped at 1.28), 0.8 (A<0: max(0.5, 0.8)), 3.0 (dual: min(5, 3))
        close(loss, torch.tensor((-1.1 - 1.28 + 0.8 + 3.0) / 4, dtype=d, device=device), atol=1e-12, rtol=1e-12)
        loss.backward()
        # d/d logp_new = -A * ratio / 4 where the unclipped term is active, else 0
        close(new.grad, torch.tensor([-1.1 / 4, 0, 0, 0, 0], dtype=d, device=device), atol=1e-12, rtol=1e-12)
        assert stats["clip_fraction"].item() == pytest.approx(2 / 4)
        assert stats["dual_clip_fraction"].item() == pytest.approx(1 / 4)
        assert stats["ratio_mean"].item() == pytest.approx((1.1 + 1.5 + 0.5 + 5.0) / 4)


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_ratio_one_at_old_params_and_kl(path, device):
    fn = P.clipped_policy_loss_triton if path == "triton" else P.clipped_policy_loss_reference
    new, _, adv, ref, _ = _inputs((5, 7), torch.float64, device)
    loss, stats = fn(new, new, adv, kl_coef=0.5, logp_ref=ref)
    d = ref - new
    kl = torch.exp(d) - d - 1
    assert stats["ratio_mean"].item() == 1.0 and stats["clip_fraction"].item() == 0.0
    assert stats["approx_kl"].item() == 0.0
    close(loss, (-adv + 0.5 * kl).mean(), atol=1e-12, rtol=1e-12)
    close(stats["kl_ref"], kl.mean().float(), atol=1e-6, rtol=1e-6)


def test_broadcast_advantages(device):
    new, old, _, _, mask = _inputs((4, 6), torch.float32, device)
    adv = torch.randn(4, 1, device=device)
    loss_t, _ = P.clipped_policy_loss_triton(new, old, adv, mask=mask)
    loss_r, _ = P.clipped_policy_loss_reference(new, old, adv.expand(4, 6), mask=mask)
    close(loss_t, loss_r, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradcheck_fp64(variant, device):
    new, old, adv, ref, mask = _inputs((4, 5), torch.float64, device, seed=7)
    # Keep ratios away from the clip and dual-clip kinks, where the loss is not differentiable.
    ratio = torch.exp(new - old)
    away = ((ratio - 0.8).abs() > 1e-3) & ((ratio - 1.28).abs() > 1e-3) & ((ratio - 1.2).abs() > 1e-3) \
        & ((ratio - 3.0).abs() > 1e-3)
    assert away.all()
    kw = _kwargs(variant, ref, mask)
    assert torch.autograd.gradcheck(lambda n: P.clipped_policy_loss_triton(n, old, adv, **kw)[0],
                                    (new.clone().requires_grad_(),))


def test_bad_inputs():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="needs logp_ref"):
        P.clipped_policy_loss(x, x, x, kl_coef=0.1)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        P.clipped_policy_loss(x, x, x, dual_clip=0.5)
    with pytest.raises(ValueError, match="advantages of shape"):
        P.clipped_policy_loss(x, x, torch.randn(2, 4))

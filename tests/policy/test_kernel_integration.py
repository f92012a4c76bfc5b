"""The policy's hot paths go through vla.kernels: training numbers match with kernels on and off."""

import warnings

import pytest
import torch

from tests.policy.helpers import make_batch, make_policy
from vla.kernels import dispatch


def _train_losses(monkeypatch, backend: str, steps: int = 3) -> list[float]:
    monkeypatch.setenv("VLA_KERNELS", backend)
    dispatch.reset()
    policy = make_policy(seed=1)
    opt = torch.optim.SGD(policy.parameters(), lr=1e-2)
    losses = []
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        batch = make_batch(b=2, seed=step)
        noise = torch.randn(2, 4, 7, generator=g)
        t = torch.rand(2, generator=g)
        loss, _ = policy(batch, noise=noise, time=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.skipif(not dispatch.HAS_TRITON, reason="triton is not installed")
def test_training_matches_with_kernels_on_and_off(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error", dispatch.KernelFallbackWarning)  # a silent fallback would prove nothing
        on = _train_losses(monkeypatch, "triton")
    off = _train_losses(monkeypatch, "torch")
    assert dispatch.failed_ops() == frozenset()
    torch.testing.assert_close(torch.tensor(on), torch.tensor(off), rtol=1e-4, atol=1e-5)

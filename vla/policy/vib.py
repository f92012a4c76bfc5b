"""A variational information bottleneck between a policy's observation embedding e and its action
generator (ZPRL, docs/ALGORITHMS.md section 4): q(z | e) = N(mu(e), exp(logvar(e))), e_hat = Dec(z).

The generator is conditioned on e_hat, so a small move of z (what ZPRL's RL learns) moves the actions
along directions the demonstrations vary in. Encoder and decoder are small MLPs (the released code's
3 layers of width 256 with GELU).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from vla.kernels import vib_sample


def _mlp(n_in: int, width: int, n_out: int, layers: int = 3) -> nn.Sequential:
    dims = [n_in] + [width] * (layers - 1)
    blocks: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*blocks, nn.Linear(dims[-1], n_out))


class VariationalBottleneck(nn.Module):
    def __init__(self, feature_dim: int, latent_dim: int, width: int = 256):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"the bottleneck's latent size must be at least 1, got {latent_dim}")
        self.feature_dim, self.latent_dim = feature_dim, latent_dim
        self.encoder = _mlp(feature_dim, width, 2 * latent_dim)
        self.decoder = _mlp(latent_dim, width, feature_dim)

    def encode(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each [B, latent_dim]."""
        mu, logvar = self.encoder(e).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 5.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def losses(self, e: torch.Tensor, generator: torch.Generator | None = None):
        """(e_hat from a sampled z, KL(q || N(0, I)) per row averaged, ||e_hat - sg(e)||^2 averaged).

        e is detached here: the VIB terms train only the VIB."""
        e = e.detach()
        mu, logvar = self.encode(e)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device) if generator else torch.randn_like(mu)
        z, kl = vib_sample(mu, logvar, eps)  # the fused kernel on a GPU, torch elsewhere
        e_hat = self.decode(z)
        return e_hat, kl.mean(), (e_hat - e).pow(2).sum(-1).mean()


class _Call(nn.Module):
    """Holds a module as a submodule so torch.func.functional_call can swap its parameters around fn."""

    def __init__(self, module: nn.Module, fn: Callable):
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, *args):
        return self.fn(*args)


def frozen_call(module: nn.Module, fn: Callable, *args, trainable: str):
    """fn(*args) with every parameter of `module` detached except those whose names start with `trainable`:
    gradients reach the inputs (and those parameters) but no other weight, while the weights themselves
    keep training through the other terms of the same loss.

    Gradient checkpointing is off inside: its backward recomputation would run after the real weights are
    back in place and find other tensors than the forward saved."""
    frozen = {f"module.{name}": p.detach() for name, p in module.named_parameters() if not name.startswith(trainable)}
    checkpointed = [m for m in module.modules() if getattr(m, "gradient_checkpointing", False)]
    for m in checkpointed:
        m.gradient_checkpointing = False
    try:
        return torch.func.functional_call(_Call(module, fn), frozen, args)
    finally:
        for m in checkpointed:
            m.gradient_checkpointing = True

"""The three action spaces an off-policy learner can steer a frozen flow policy through.

Each maps the learner's action `a` in [-1, 1]^dim (SAC's tanh-squashed output, so `a = tanh(u)`)
to the executed part of an action chunk, without touching the base policy's parameters:

    noise     DSRL: the flow's initial noise x_0 = bound * a; the ODE from there is the chunk.
    residual  ResFiT-style action residual: a' = clip(a_base + scale * a) per executed action.
    zprl      ZPRL: z' = z + scale * a on the bottleneck latent z = mu(e) of a VIB policy.

`a = 0` is the base policy exactly for residual and zprl, which is what their warm-up plays
("steering off"); for noise it is the ODE from x_0 = 0, and warm-up plays the base's own Gaussian
noise clipped into the +-bound box (clipping alone cost Lift's 2-demo policy 28% -> 18%: BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import torch

from vla.errors import UserError
from vla.policy.flow_matching_policy import ACTION_KEY

SPACES = ("noise", "residual", "zprl")


class SteeringSpace:
    name: str

    def __init__(self, policy, scale: float):
        self.policy, self.scale = policy, float(scale)
        c = policy.config
        self.chunk_size, self.action_dim, self.n_action_steps = c.chunk_size, c.action_dim, c.n_action_steps

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def actor_features(self, batch: dict) -> torch.Tensor:
        """What the actor reads, [B, F]: only what the deployed policy reads."""
        return self.policy.observation_vector(batch)

    def chunk(self, batch: dict, a: torch.Tensor, base_noise: torch.Tensor) -> torch.Tensor:
        """Un-normalised executed actions [B, n_action_steps, action_dim] for learner actions a [B, dim];
        base_noise [B, chunk, model_action_dim] is the flow noise where the space does not set it."""
        raise NotImplementedError

    def warmup_action(self, rng: np.random.Generator) -> np.ndarray:
        """The learner action that leaves the base policy unsteered, for the warm-up phase."""
        return np.zeros(self.dim, np.float32)


class NoiseSpace(SteeringSpace):
    name = "noise"

    @property
    def dim(self) -> int:
        return self.chunk_size * self.policy.config.model_action_dim

    def chunk(self, batch, a, base_noise):
        noise = self.scale * a.reshape(-1, self.chunk_size, self.policy.config.model_action_dim)
        return self.policy.predict_action_chunk(batch, noise=noise)[:, : self.n_action_steps]

    def warmup_action(self, rng):
        # the base policy's own Gaussian noise, clipped into the steerable box
        return np.clip(rng.standard_normal(self.dim) / self.scale, -1.0, 1.0).astype(np.float32)


class ResidualSpace(SteeringSpace):
    """One residual per executed action: a' = clip(a_base + scale * a, -1, 1) in the env's action units."""

    name = "residual"

    @property
    def dim(self) -> int:
        return self.n_action_steps * self.action_dim

    def chunk(self, batch, a, base_noise):
        base = self.policy.predict_action_chunk(batch, noise=base_noise)[:, : self.n_action_steps]
        if not torch.any(a):  # exactly the base chunk, not base + 0.0 after a clip
            return base
        return torch.clamp(base + self.scale * a.reshape(base.shape), -1.0, 1.0)


class LatentSpace(SteeringSpace):
    """ZPRL: the actor reads [observation, z] and moves z = mu(e) by at most `scale` per coordinate."""

    name = "zprl"

    def __init__(self, policy, scale: float):
        super().__init__(policy, scale)
        if getattr(policy, "vib", None) is None:
            raise UserError("--algo zprl steers a policy's bottleneck latent, and this policy has none: add one "
                            "with `vla train --policy.type=state_flow --policy.init=<policy> --policy.vib_dim=16 "
                            "--dataset=<its demos>` (trains only the VIB)")

    @property
    def dim(self) -> int:
        return self.policy.vib.latent_dim

    def actor_features(self, batch):
        features = self.policy.observation_vector(batch)
        return torch.cat([features, self.policy.bottleneck_mean(batch)], dim=-1)

    def chunk(self, batch, a, base_noise):
        z = self.policy.bottleneck_mean(batch)
        z_steered = z + self.scale * a if torch.any(a) else z
        actions = self.policy.integrate(*self.policy.condition_from_latent(z_steered), noise=base_noise)
        return self.policy.normalizer.unnormalize(ACTION_KEY, actions)[:, : self.n_action_steps]


def make_space(name: str, policy, scale: float) -> SteeringSpace:
    spaces = {"noise": NoiseSpace, "residual": ResidualSpace, "zprl": LatentSpace}
    if name not in spaces:
        raise UserError(f"steering space {name!r} is not one of {SPACES}")
    if not scale > 0:
        raise UserError(f"the steering scale (noise bound, residual or latent lambda) must be > 0, got {scale}")
    return spaces[name](policy, scale)

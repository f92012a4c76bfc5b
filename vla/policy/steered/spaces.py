"""The three action spaces an off-policy learner can steer a frozen flow policy through.

Each maps the learner's action `a` in [-1, 1]^dim (SAC's tanh-squashed output, so `a = tanh(u)`)
to the executed part of an action chunk, without touching the base policy's parameters:

    noise     DSRL: the flow's initial noise x_0 = bound * a; the ODE from there is the chunk.
    residual  ResFiT-style action residual: a' = clip(a_base + scale * a) per executed action.
    zprl      ZPRL: z' = z + scale * a on the bottleneck latent z = mu of a VIB policy.

The actor reads only what the deployed policy reads: a state policy's observation vector; a VLA's pooled
prefix and state, computed by the frozen policy itself (plus z for zprl).

`a = 0` is the base policy exactly for residual and zprl, which is what their warm-up plays
("steering off"); for noise it is the ODE from x_0 = 0, and warm-up plays the base's own Gaussian
noise clipped into the +-bound box (clipping alone cost Lift's 2-demo policy 28% -> 18%: BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vla.errors import UserError
from vla.policy.flow_matching_policy import ACTION_KEY

SPACES = ("noise", "residual", "zprl")


@dataclass
class Observed:
    """One observation as a steering space sees it, encoded once: what the actor reads and what the
    chunk is built from (the base policy's condition, or for zprl the bottleneck's context and mean)."""

    features: torch.Tensor  # [B, F], the actor's input
    condition: tuple  # noise, residual: encode_observation's (condition, features); zprl: (context,)
    z: torch.Tensor | None = None  # zprl: mu [B, vib_dim]


class SteeringSpace:
    name: str

    def __init__(self, policy, scale: float):
        self.policy, self.scale = policy, float(scale)
        c = policy.config
        self.chunk_size, self.action_dim, self.n_action_steps = c.chunk_size, c.action_dim, c.n_action_steps

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        """Size of what the actor reads."""
        return self.policy.steering_feature_dim

    @torch.no_grad()
    def observe(self, batch: dict) -> Observed:
        """Only what the deployed policy reads: the state policy's observation vector, or the VLA's pooled
        prefix and state (the policy's own steering_features)."""
        condition = self.policy.encode_observation(batch)
        return Observed(self.policy.steering_features(batch, condition[0]), condition)

    def actor_features(self, batch: dict) -> torch.Tensor:
        """What the actor reads, [B, feature_dim]."""
        return self.observe(batch).features

    @torch.no_grad()
    def chunk(self, observed: Observed | dict, a: torch.Tensor, base_noise: torch.Tensor) -> torch.Tensor:
        """Un-normalised executed actions [B, n_action_steps, action_dim] for learner actions a [B, dim];
        base_noise [B, chunk, model_action_dim] is the flow noise where the space does not set it."""
        observed = observed if isinstance(observed, Observed) else self.observe(observed)
        return self._chunk(observed, a, base_noise)

    def _chunk(self, observed: Observed, a: torch.Tensor, base_noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _integrate(self, condition: tuple, noise: torch.Tensor) -> torch.Tensor:
        """The executed part of the un-normalised chunk the base policy integrates from noise."""
        actions = self.policy.integrate(*condition, noise=noise)
        return self.policy.normalizer.unnormalize(ACTION_KEY, actions)[:, : self.n_action_steps]

    def warmup_action(self, rng: np.random.Generator) -> np.ndarray:
        """The learner action that leaves the base policy unsteered, for the warm-up phase."""
        return np.zeros(self.dim, np.float32)


class NoiseSpace(SteeringSpace):
    name = "noise"

    @property
    def dim(self) -> int:
        return self.chunk_size * self.policy.config.model_action_dim

    def _chunk(self, observed, a, base_noise):
        noise = self.scale * a.reshape(-1, self.chunk_size, self.policy.config.model_action_dim)
        return self._integrate(observed.condition, noise)

    def warmup_action(self, rng):
        # the base policy's own Gaussian noise, clipped into the steerable box
        return np.clip(rng.standard_normal(self.dim) / self.scale, -1.0, 1.0).astype(np.float32)


class ResidualSpace(SteeringSpace):
    """One residual per executed action: a' = clip(a_base + scale * a, -1, 1) in the env's action units."""

    name = "residual"

    @property
    def dim(self) -> int:
        return self.n_action_steps * self.action_dim

    def _chunk(self, observed, a, base_noise):
        base = self._integrate(observed.condition, base_noise)
        if not torch.any(a):  # exactly the base chunk, not base + 0.0 after a clip
            return base
        return torch.clamp(base + self.scale * a.reshape(base.shape), -1.0, 1.0)


class LatentSpace(SteeringSpace):
    """ZPRL: the actor reads [observation, z] and moves z = mu by at most `scale` per coordinate."""

    name = "zprl"

    def __init__(self, policy, scale: float):
        super().__init__(policy, scale)
        if getattr(policy, "vib", None) is None:
            raise UserError(f"--algo zprl steers a policy's bottleneck latent, and this policy has none: add one "
                            f"with `vla train --policy.type={policy.config.type} --policy.init=<policy> "
                            "--policy.vib_dim=16 --dataset=<its demos>` (trains only the VIB; train until train/vib_reconstruction "
                            "stops falling, and check the result with `vla eval`: on Square 3k steps kept 6% of a "
                            "30% policy, 30k steps 24%)")

    @property
    def dim(self) -> int:
        return self.policy.vib.latent_dim

    @property
    def feature_dim(self) -> int:
        return self.policy.steering_feature_dim + self.dim

    @torch.no_grad()
    def observe(self, batch):
        context, z = self.policy.bottleneck_encode(batch)
        prefix = context[0] if context is not None else None  # the VLA's cache before the bottleneck token
        features = torch.cat([self.policy.steering_features(batch, prefix), z.float()], dim=-1)
        return Observed(features, (context,), z)

    def _chunk(self, observed, a, base_noise):
        z = observed.z + self.scale * a if torch.any(a) else observed.z
        return self._integrate(self.policy.condition_from_latent(z, observed.condition[0]), base_noise)


def make_space(name: str, policy, scale: float) -> SteeringSpace:
    spaces = {"noise": NoiseSpace, "residual": ResidualSpace, "zprl": LatentSpace}
    if name not in spaces:
        raise UserError(f"steering space {name!r} is not one of {SPACES}")
    if not scale > 0:
        raise UserError(f"the steering scale (noise bound, residual or latent lambda) must be > 0, got {scale}")
    return spaces[name](policy, scale)

"""A flow-matching policy on low-dimensional observations: robot state plus the task's object state.

The policy class that diffusion policy, DPPO and DSRL fine-tune with RL: no images, no language,
well under a millisecond per chunk on a CPU. It shares the VLA's sampling interface, so Flow-SDE,
Flow-Noise, GRPO and PPO run on it unchanged:

    encode_observation(batch) -> (condition, features)   condition.select(rows), condition.pooled()
    velocity(condition, features, x_t, t[, return_hidden]) -> v [B, H, A] (, hidden [B, H, W])

and inherits the training loss, sampler, action queue and checkpoints from FlowMatchingPolicy, as
the VLA does. With `vib_dim > 0` the velocity network is conditioned on a variational bottleneck's
reconstruction e_hat(mu(e)) of the observation embedding e (ZPRL; `vla rl --algo zprl` steers mu).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vla.policy.config import PolicyConfig
from vla.policy.flow_matching_policy import ACTION_KEY, ENV_STATE_KEY, STATE_KEY, FlowMatchingPolicy
from vla.policy.normalize import Normalizer
from vla.policy.state_flow.backbones import ResidualMLPVelocity, TemporalUNetVelocity
from vla.policy.vib import VariationalBottleneck

STATE_FLOW_TYPE = "state_flow"  # config.json type (vla/policy/registry.py), also its config's type field
BACKBONES = ("mlp", "unet")


@dataclass
class StateCondition:
    """The encoded observation: one feature vector per batch row."""

    features: torch.Tensor  # [B, C]

    def select(self, rows: torch.Tensor) -> "StateCondition":
        return StateCondition(self.features.index_select(0, rows))

    def pooled(self) -> torch.Tensor:
        return self.features


class StateFlowPolicy(FlowMatchingPolicy):
    checkpoint_type = STATE_FLOW_TYPE

    @classmethod
    def config_from_dict(cls, data: dict, source: str) -> PolicyConfig:
        return PolicyConfig.from_dict({**data, "type": STATE_FLOW_TYPE}, source=source)

    def __init__(self, config: PolicyConfig):
        super().__init__()
        validate_state_config(config)
        self.config = c = config
        obs_dim = c.state_dim + c.environment_state_dim
        self.obs_encoder = nn.Sequential(nn.Linear(obs_dim, c.hidden_dim), nn.Mish(), nn.Linear(c.hidden_dim, c.hidden_dim))
        if c.backbone == "mlp":
            self.backbone = ResidualMLPVelocity(c.chunk_size, c.action_dim, c.hidden_dim, c.hidden_dim, c.num_blocks)
            self.velocity_hidden_dim = c.hidden_dim
        else:
            self.backbone = TemporalUNetVelocity(c.chunk_size, c.action_dim, c.hidden_dim, c.hidden_dim)
            self.velocity_hidden_dim = self.backbone.feature_dim
        self.pooled_dim = c.hidden_dim
        self.vib = VariationalBottleneck(c.hidden_dim, c.vib_dim) if c.vib_dim else None
        dims = {STATE_KEY: c.state_dim, ACTION_KEY: c.action_dim}
        if c.environment_state_dim:
            dims[ENV_STATE_KEY] = c.environment_state_dim
        self.normalizer = Normalizer(dims, c.normalization, eps=c.normalization_eps)

    @property
    def device(self) -> torch.device:
        return self.obs_encoder[0].weight.device

    # ------------------------------------------------------------- the shared interface
    def observation_vector(self, batch: dict) -> torch.Tensor:
        """Normalised [state, environment state], [B, state_dim + environment_state_dim]."""
        parts = [self.normalizer.normalize(STATE_KEY, batch[STATE_KEY].to(self.device).float())]
        if self.config.environment_state_dim:
            if ENV_STATE_KEY not in batch:
                raise KeyError(f"batch has no {ENV_STATE_KEY!r}: this policy reads the task's object state "
                               "(collect with a robosuite task, or train with policy.environment_state_dim=0)")
            parts.append(self.normalizer.normalize(ENV_STATE_KEY, batch[ENV_STATE_KEY].to(self.device).float()))
        return torch.cat(parts, dim=-1)

    def embed(self, batch: dict) -> torch.Tensor:
        """The observation embedding e [B, hidden_dim] (before the bottleneck, if any)."""
        return self.obs_encoder(self.observation_vector(batch))

    def encode_observation(self, batch: dict) -> tuple[StateCondition, torch.Tensor]:
        features = self.embed(batch)
        if self.vib is not None:  # deployment conditions on e_hat(mu(e))
            return self.condition_from_latent(self.vib.encode(features)[0])
        return StateCondition(features), features

    # ------------------------------------------------------------- the bottleneck (ZPRL)
    def bottleneck_mean(self, batch: dict) -> torch.Tensor:
        """mu(e) [B, vib_dim], the latent ZPRL steers."""
        return self.vib.encode(self.embed(batch))[0]

    def condition_from_latent(self, z: torch.Tensor) -> tuple[StateCondition, torch.Tensor]:
        e_hat = self.vib.decode(z)
        return StateCondition(e_hat), e_hat

    def forward(self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None):
        """Without a bottleneck, the flow-matching loss. With one, ZPRL's loss
        ||v(x_t | e) - u||^2 + ||v_sg(x_t | e_hat(z)) - u||^2 + beta KL(q || N(0, I)) + gamma ||e_hat - sg(e)||^2,
        where v_sg has detached weights, so the bottleneck's terms train only the bottleneck."""
        if self.vib is None:
            return super().forward(batch, noise, time)
        target = self.flow_target(batch, noise, time)
        e = self.embed(batch)
        flow = target.loss(self.velocity(StateCondition(e), e, target.x_t, target.t))
        e_hat, kl, reconstruction = self.vib.losses(e)
        frozen = {name: w.detach() for name, w in self.backbone.named_parameters()}
        v_sg, _ = torch.func.functional_call(self.backbone, frozen, (target.x_t.float(), target.t, e_hat))
        through_bottleneck = target.loss(v_sg)
        c = self.config
        loss = flow + through_bottleneck + c.vib_beta * kl + c.vib_gamma * reconstruction
        return loss, {"loss": loss.item(), "flow_loss": flow.item(), "vib_flow_loss": through_bottleneck.item(),
                      "vib_kl": kl.item(), "vib_reconstruction": reconstruction.item()}

    def velocity(self, condition: StateCondition, features: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 return_hidden: bool = False):
        v, hidden = self.backbone(x_t.float(), t, features)
        return (v, hidden) if return_hidden else v


def validate_state_config(c: PolicyConfig) -> None:
    if c.backbone not in BACKBONES:
        raise ValueError(f"policy.backbone: {c.backbone!r} is not one of {BACKBONES}")
    for name in ("hidden_dim", "num_blocks", "chunk_size", "num_inference_steps"):
        if getattr(c, name) < 1:
            raise ValueError(f"policy.{name} must be at least 1, got {getattr(c, name)}")
    if not 1 <= c.n_action_steps <= c.chunk_size:
        raise ValueError(f"policy.n_action_steps {c.n_action_steps} must be in [1, chunk_size={c.chunk_size}]")
    if c.vib_dim < 0 or c.vib_beta < 0 or c.vib_gamma < 0:
        raise ValueError(f"policy.vib_dim, vib_beta and vib_gamma must be >= 0, got {c.vib_dim}, {c.vib_beta}, "
                         f"{c.vib_gamma}")
    if c.cameras:
        raise ValueError(f"policy.cameras {c.cameras}: a state_flow policy reads no images (set policy.cameras=[])")

"""A flow-matching policy on low-dimensional observations: robot state plus the task's object state.

The policy class that diffusion policy, DPPO and DSRL fine-tune with RL: no images, no language,
well under a millisecond per chunk on a CPU. It shares the VLA's sampling interface, so Flow-SDE,
Flow-Noise, GRPO and PPO run on it unchanged:

    encode_observation(batch) -> (condition, features)   condition.select(rows), condition.pooled()
    velocity(condition, features, x_t, t[, return_hidden]) -> v [B, H, A] (, hidden [B, H, W])

and inherits the training loss, sampler, action queue and checkpoints from FlowMatchingPolicy, as
the VLA does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vla.policy.config import PolicyConfig
from vla.policy.flow_matching_policy import ACTION_KEY, ENV_STATE_KEY, STATE_KEY, FlowMatchingPolicy
from vla.policy.normalize import Normalizer
from vla.policy.state_flow.backbones import ResidualMLPVelocity, TemporalUNetVelocity

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

    def encode_observation(self, batch: dict) -> tuple[StateCondition, torch.Tensor]:
        features = self.obs_encoder(self.observation_vector(batch))
        return StateCondition(features), features

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
    if c.cameras:
        raise ValueError(f"policy.cameras {c.cameras}: a state_flow policy reads no images (set policy.cameras=[])")

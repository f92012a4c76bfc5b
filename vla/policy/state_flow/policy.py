"""A flow-matching policy on low-dimensional observations: robot state plus the task's object state.

The policy class that diffusion policy, DPPO and DSRL fine-tune with RL: no images, no language,
well under a millisecond per chunk on a CPU. It shares the VLA's sampling interface, so Flow-SDE,
Flow-Noise, GRPO and PPO run on it unchanged:

    encode_observation(batch) -> (condition, features)   condition.select(rows), condition.pooled()
    velocity(condition, features, x_t, t[, return_hidden]) -> v [B, H, A] (, hidden [B, H, W])

and the same training loss (flow matching, openpi's time convention, docs/ALGORITHMS.md), the same
checkpoint format and the same predict_action_chunk / select_action for evaluation and deployment.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from vla.kernels import flow_interpolate, flow_matching_loss
from vla.policy.checkpoint import STATE_FLOW_TYPE
from vla.policy.config import PolicyConfig
from vla.policy.normalize import Normalizer
from vla.policy.state_flow.backbones import ResidualMLPVelocity, TemporalUNetVelocity

STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
ACTION_KEY = "action"
PAD_KEY = "action_is_pad"
BACKBONES = ("mlp", "unet")


@dataclass
class StateCondition:
    """The encoded observation: one feature vector per batch row."""

    features: torch.Tensor  # [B, C]

    def select(self, rows: torch.Tensor) -> "StateCondition":
        return StateCondition(self.features.index_select(0, rows))

    def pooled(self) -> torch.Tensor:
        return self.features


class StateFlowPolicy(nn.Module):
    checkpoint_type = STATE_FLOW_TYPE

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
        self._action_queue: deque[torch.Tensor] = deque()

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

    # ------------------------------------------------------------- training
    def sample_time(self, n: int) -> torch.Tensor:
        """t ~ Beta(alpha, beta) * scale + offset (docs/ALGORITHMS.md), drawn from torch's global generator."""
        c = self.config
        beta = torch.distributions.Beta(torch.tensor(c.time_beta_alpha), torch.tensor(c.time_beta_beta))
        return (beta.sample((n,)) * c.time_scale + c.time_offset).to(self.device)

    def forward(self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None):
        """Flow-matching loss: mean over action dims of ||v - u||^2, averaged over unpadded chunk steps."""
        actions = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY].to(self.device).float())
        noise = torch.randn_like(actions) if noise is None else noise.to(actions)
        t = self.sample_time(actions.shape[0]) if time is None else time.to(actions)
        condition, features = self.encode_observation(batch)
        v = self.velocity(condition, features, flow_interpolate(actions, noise, t), t)
        valid = ~batch[PAD_KEY].to(self.device) if PAD_KEY in batch else None
        loss = flow_matching_loss(v, actions, noise, valid)
        return loss, {"loss": loss.item()}

    # ------------------------------------------------------------- sampling
    def sample_actions(self, batch: dict, noise: torch.Tensor | None = None, num_steps: int | None = None) -> torch.Tensor:
        """Euler-integrate from noise at t = 1 to t = 0; the normalised chunk [B, H, A]."""
        c = self.config
        condition, features = self.encode_observation(batch)
        b = features.shape[0]
        x = torch.randn(b, c.chunk_size, c.action_dim, device=self.device) if noise is None else noise.to(self.device).float()
        k = num_steps or c.num_inference_steps
        dt = 1.0 / k
        for step in range(k):
            t = torch.full((b,), 1.0 - step * dt, device=self.device)
            x = x - dt * self.velocity(condition, features, x, t)
        return x

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Un-normalised action chunk [B, H, A]."""
        return self.normalizer.unnormalize(ACTION_KEY, self.sample_actions(batch, noise))

    @torch.no_grad()
    def select_action(self, batch: dict) -> torch.Tensor:
        """Next action [B, A]; a new chunk is predicted when the first n_action_steps are used up."""
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))
        return self._action_queue.popleft()

    def reset(self) -> None:
        self._action_queue.clear()

    # ------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory) -> None:
        from vla.policy.checkpoint import save_policy

        save_policy(self, directory)

    @classmethod
    def from_pretrained(cls, directory, map_location: str | torch.device = "cpu") -> "StateFlowPolicy":
        from vla.policy.checkpoint import load_policy

        return load_policy(directory, map_location)


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

"""What every flow-matching policy type shares, given its encode_observation and velocity.

A policy type (the VLA in flow_vla/, SmolVLA in smolvla/, the state policy in state_flow/) defines

    encode_observation(batch) -> (condition, token)   condition.select(rows), condition.pooled()
    velocity(condition, token, x_t, t[, return_hidden]) -> v [B, H, A_model] (, hidden [B, H, W])

plus `config`, `normalizer`, `device`, `checkpoint_type` (its key in vla/policy/registry.py) and
`config_from_dict`; this class adds the flow-matching training loss, the Euler sampler, chunked
action selection and saving checkpoints (vla.policy.registry.load_policy loads them). The RL samplers (vla/policy/sampling.py)
use the same two methods, so every algorithm runs on every policy type.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vla.kernels import flow_interpolate, flow_matching_loss
from vla.policy.checkpoint import save_policy

# Batch keys (lerobot's).
STATE_KEY, ACTION_KEY, PAD_KEY = "observation.state", "action", "action_is_pad"
ENV_STATE_KEY = "observation.environment_state"  # the task's object state (state policies read it)
IMAGE_PREFIX = "observation.images."  # + camera name

# (x_t, v, t, dt, step_index) -> x_next; the ODE default, replaced by stochastic samplers for RL.
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, int], torch.Tensor]


def euler_step(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor, dt: float, step: int) -> torch.Tensor:
    return x - dt * v


@dataclass
class FlowTarget:
    """One flow-matching training batch: x_t = t * noise + (1 - t) * actions, target u = noise - actions."""

    actions: torch.Tensor  # [B, H, A_model], normalised, zero-padded to the model's width
    noise: torch.Tensor
    t: torch.Tensor  # [B]
    x_t: torch.Tensor
    valid: torch.Tensor | None  # [B, H] unpadded chunk steps, None = all
    action_dim: int  # the real action dims, which the loss reads

    def loss(self, v: torch.Tensor) -> torch.Tensor:
        a = self.action_dim
        return flow_matching_loss(v[..., :a], self.actions[..., :a], self.noise[..., :a], self.valid)


class ChunkedActions:
    """select_action / reset over a policy's predict_action_chunk: the first n_action_steps of a chunk are
    played one by one, then a new chunk is predicted. The class sets self._action_queue = deque()."""

    _action_queue: deque

    @torch.no_grad()
    def select_action(self, batch: dict) -> torch.Tensor:
        """Next action [B, A]; a new chunk is predicted when the first n_action_steps are used up."""
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))
        return self._action_queue.popleft()

    def reset(self) -> None:
        self._action_queue.clear()


class FlowMatchingPolicy(ChunkedActions, nn.Module):
    checkpoint_type: str  # config.json's "type": the policy's key in vla/policy/registry.py

    @classmethod
    def config_from_dict(cls, data: dict, source: str):
        """The config that a checkpoint's config.json (without its "type") describes."""
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self._action_queue: deque[torch.Tensor] = deque()

    def sample_time(self, n: int) -> torch.Tensor:
        """t ~ Beta(1.5, 1) * 0.999 + 0.001 (docs/ALGORITHMS.md), drawn from torch's global generator."""
        c = self.config
        beta = torch.distributions.Beta(torch.tensor(c.time_beta_alpha), torch.tensor(c.time_beta_beta))
        return (beta.sample((n,)) * c.time_scale + c.time_offset).to(self.device)

    def forward(self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None):
        """Flow-matching loss: mean over action dims of ||v - u||^2, averaged over unpadded chunk steps."""
        target = self.flow_target(batch, noise, time)
        cache, state_token = self.encode_observation(batch)
        loss = target.loss(self.velocity(cache, state_token, target.x_t, target.t))
        return loss, {"loss": loss.item()}

    def flow_target(self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None):
        """The batch's normalised actions, noise, flow time and interpolant x_t, and the loss of a velocity."""
        actions = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY].to(self.device).float())
        a = actions.shape[-1]
        actions = F.pad(actions, (0, self.config.model_action_dim - a))  # pi0 pads actions to its width
        noise = torch.randn_like(actions) if noise is None else noise.to(actions)
        t = self.sample_time(actions.shape[0]) if time is None else time.to(actions)
        valid = ~batch[PAD_KEY].to(self.device) if PAD_KEY in batch else None
        return FlowTarget(actions, noise, t, flow_interpolate(actions, noise, t), valid, a)

    # ------------------------------------------------------------- sampling
    def sample_actions(self, batch: dict, noise: torch.Tensor | None = None, num_steps: int | None = None,
                       step_fn: StepFn = euler_step) -> torch.Tensor:
        """Integrate from noise at t = 1 to t = 0; returns the normalised chunk [B, H, A].

        The chain runs in the model's (padded) action width; noise may be given in it or in A."""
        return self.integrate(*self.encode_observation(batch), noise=noise, num_steps=num_steps, step_fn=step_fn)

    def integrate(self, cache, state_token: torch.Tensor, noise: torch.Tensor | None = None,
                  num_steps: int | None = None, step_fn: StepFn = euler_step) -> torch.Tensor:
        """sample_actions from an encoded observation."""
        c = self.config
        b = state_token.shape[0]
        x = torch.randn(b, c.chunk_size, c.model_action_dim, device=self.device) if noise is None else noise.to(self.device).float()
        k = num_steps or c.num_inference_steps
        dt = 1.0 / k
        for step in range(k):
            t = torch.full((b,), 1.0 - step * dt, device=self.device)
            x = step_fn(x, self.velocity(cache, state_token, x, t), t, dt, step)
        return x[..., : c.action_dim]

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Un-normalised action chunk [B, H, A]."""
        return self.normalizer.unnormalize(ACTION_KEY, self.sample_actions(batch, noise))

    # ---------------------------------------------------------- checkpoints
    def save_pretrained(self, directory) -> None:
        save_policy(self, directory)

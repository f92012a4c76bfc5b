"""A flow-matching policy on low-dimensional observations: robot state plus the task's object state.

The policy class that diffusion policy, DPPO and DSRL fine-tune with RL: no images, no language,
well under a millisecond per chunk on a CPU. It shares the VLA's sampling interface, so Flow-SDE,
Flow-Noise, GRPO and PPO run on it unchanged:

    encode_observation(batch) -> (condition, features)   condition.select(rows), condition.pooled()
    velocity(condition, features, x_t, t[, return_hidden]) -> v [B, H, A] (, hidden [B, H, W])

and inherits the training loss, sampler, action queue and checkpoints from FlowMatchingPolicy, as
the VLA does. With `vib_dim > 0` the velocity network is conditioned on a variational bottleneck's
reconstruction e_hat(mu(e)) of the observation embedding e (ZPRL; `vla rl --algo zprl` steers mu).
With `latent_reasoning` it thinks first (reasoning.py): latents from a recurrent block, a length chosen
among the candidates, and the velocity network conditioned on [e, pooled latents] (`vla rl --algo lapo`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vla.policy.config import PolicyConfig, validate_bottleneck
from vla.policy.flow_matching_policy import ACTION_KEY, ENV_STATE_KEY, STATE_KEY, FlowMatchingPolicy
from vla.policy.normalize import Normalizer
from vla.policy.state_flow.backbones import ResidualMLPVelocity, TemporalUNetVelocity
from vla.policy.latent_reasoning import (FUTURE_PAD_KEY, FUTURE_PREFIX, Reasoning, latent_target_offsets,  # noqa: F401
                                         warm_up_latent_loss)
from vla.policy.state_flow.reasoning import LatentReasoner
from vla.policy.vib import VariationalBottleneck

STATE_FLOW_TYPE = "state_flow"  # config.json type (vla/policy/registry.py), also its config's type field
BACKBONES = ("mlp", "unet")


@dataclass
class StateCondition:
    """The encoded observation: one feature vector per batch row (and, with latent reasoning, its thought)."""

    features: torch.Tensor  # [B, C]
    reasoning: Reasoning | None = None

    def select(self, rows: torch.Tensor) -> "StateCondition":
        reasoning = None if self.reasoning is None else self.reasoning.select(rows)
        return StateCondition(self.features.index_select(0, rows), reasoning)

    def pooled(self) -> torch.Tensor:
        return self.features

    def record(self) -> dict[str, torch.Tensor] | None:
        """Per-row choices made before the actions, which RL rollouts store (the latent reasoning's)."""
        return None if self.reasoning is None else self.reasoning.record()


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
        self.reasoner = LatentReasoner(c.hidden_dim, c.latent_lengths, c.latent_beta) if c.latent_reasoning else None
        cond_dim = 2 * c.hidden_dim if c.latent_reasoning else c.hidden_dim  # [e, pooled latents]
        if c.backbone == "mlp":
            self.backbone = ResidualMLPVelocity(c.chunk_size, c.action_dim, cond_dim, c.hidden_dim, c.num_blocks)
            self.velocity_hidden_dim = c.hidden_dim
        else:
            self.backbone = TemporalUNetVelocity(c.chunk_size, c.action_dim, cond_dim, c.hidden_dim)
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
        if self.reasoner is not None:  # deployment thinks with the evaluation rule's lengths
            return self.think(batch)
        features = self.embed(batch)
        if self.vib is not None:  # deployment conditions on e_hat(mu(e))
            return self.condition_from_latent(self.vib.encode(features)[0])
        return StateCondition(features), features

    def explore_observation(self, batch: dict, generator: torch.Generator | None = None):
        """encode_observation as RL rollouts sample it: the thinking length is drawn from p_m."""
        if self.reasoner is None:
            return self.encode_observation(batch)
        return self.think(batch, sample=True, generator=generator)

    # ------------------------------------------------------------- latent reasoning (LAPO)
    def think(self, batch: dict, lengths: torch.Tensor | None = None, latents: torch.Tensor | None = None,
              sample: bool = False, generator: torch.Generator | None = None) -> tuple[StateCondition, torch.Tensor]:
        """The observation after latent reasoning: (condition carrying the Reasoning, velocity features
        [e, pooled latents]). Lengths are given (with `latents`: the stored thought, teacher-forced), drawn
        from p_m (`sample`) or chosen by the evaluation rule."""
        if self.reasoner is None:
            raise ValueError("this state_flow policy was built without latent reasoning (policy.latent_reasoning)")
        e = self.embed(batch)
        start = time.perf_counter()
        forced_lengths = None if latents is None else lengths.to(self.device)
        z = self.reasoner.think(e, None if latents is None else latents.to(self.device), forced_lengths)
        log_probs = self.reasoner.length_log_probs(z)
        if lengths is None:
            lengths = self.reasoner.choose(log_probs, sample, generator, self.config.latent_eval_threshold)
        lengths = lengths.to(self.device)
        features = torch.cat([e, self.reasoner.pool(z, lengths)], dim=-1)
        if self.device.type == "cuda":  # honest timings: wait for queued kernels
            torch.cuda.synchronize(self.device)
        reasoning = Reasoning(z, lengths, log_probs, self.reasoner.candidates, time.perf_counter() - start)
        return StateCondition(e, reasoning), features

    # ------------------------------------------------------------- the bottleneck (ZPRL)
    def bottleneck_encode(self, batch: dict) -> tuple[None, torch.Tensor]:
        """(no context: the velocity network reads the observation only through z, mu(e) [B, vib_dim]),
        the latent ZPRL steers."""
        return None, self.vib.encode(self.embed(batch))[0]

    def condition_from_latent(self, z: torch.Tensor, context: None = None) -> tuple[StateCondition, torch.Tensor]:
        e_hat = self.vib.decode(z)
        return StateCondition(e_hat), e_hat

    # ------------------------------------------------------------- what a steering actor reads
    @property
    def steering_feature_dim(self) -> int:
        return self.config.state_dim + self.config.environment_state_dim

    def steering_features(self, batch: dict, condition=None) -> torch.Tensor:
        """The normalised observation vector [B, steering_feature_dim] (cheaper to recompute than to keep)."""
        return self.observation_vector(batch)

    def forward(self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None):
        """Without a bottleneck, the flow-matching loss. With one, ZPRL's loss
        ||v(x_t | e) - u||^2 + ||v_sg(x_t | e_hat(z)) - u||^2 + beta KL(q || N(0, I)) + gamma ||e_hat - sg(e)||^2,
        where v_sg has detached weights, so the bottleneck's terms train only the bottleneck.
        With latent reasoning, the warm-up loss (latent_reasoning_loss)."""
        if self.reasoner is not None:
            return self.latent_reasoning_loss(batch, noise, time)
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

    def latent_reasoning_loss(self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None):
        """Warm-up SFT: flow-matching loss with a length L drawn uniformly among the candidates
        + latent_end_weight * CE(p, L) + latent_loss_weight * mean over latents i <= L (not past the episode's
        end) of 1 - cos(z_i, sg(e(observation i * latent_stride frames ahead))).

        The targets are the policy's own observation encoder, stop-gradient (docs/DECISIONS.md): a latent
        learns to be the embedding of a future observation, the space its first input came from. Without
        future observations in the batch (RL's demo frames) the latent term is left out. L, the flow noise
        and time come from torch's global generator."""
        c = self.config
        target = self.flow_target(batch, noise, time)
        e = self.embed(batch)
        z = self.reasoner.think(e)
        log_probs = self.reasoner.length_log_probs(z)
        pick, lengths = self.reasoner.uniform(e.shape[0], self.device)
        features = torch.cat([e, self.reasoner.pool(z, lengths)], dim=-1)
        flow = target.loss(self.velocity(StateCondition(e), features, target.x_t, target.t))
        end = F.nll_loss(log_probs, pick)
        loss = flow + c.latent_end_weight * end
        info = {"flow_loss": flow.item(), "end_loss": end.item()}
        if FUTURE_PREFIX + STATE_KEY in batch:
            future, pad = self.future_embeddings(batch)
            latent = warm_up_latent_loss(z, future, lengths, pad)
            loss = loss + c.latent_loss_weight * latent
            info["latent_loss"] = latent.item()
        return loss, {"loss": loss.item(), **info}

    def future_embeddings(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """e of the batch's future observations [B, L_max, W], and which lie past the episode's end [B, L_max]."""
        keys = [STATE_KEY] + ([ENV_STATE_KEY] if self.config.environment_state_dim else [])
        future = {k: batch[FUTURE_PREFIX + k] for k in keys if FUTURE_PREFIX + k in batch}
        b, n = future[STATE_KEY].shape[:2]
        if n != self.reasoner.max_length or len(future) != len(keys):
            raise ValueError(f"the batch's future observations have {n} steps of {sorted(future)}; latent reasoning "
                             f"regresses {self.reasoner.max_length} steps of {[FUTURE_PREFIX + k for k in keys]} "
                             "(LeRobotDataset(future_offsets=latent_target_offsets(config)))")
        flat = {k: v.reshape(b * n, -1) for k, v in future.items()}
        pad = batch.get(FUTURE_PAD_KEY)
        pad = torch.zeros(b, n, dtype=torch.bool) if pad is None else pad
        return self.embed(flat).reshape(b, n, -1), pad.to(self.device)

    def velocity(self, condition: StateCondition, features: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 return_hidden: bool = False):
        v, hidden = self.backbone(x_t.float(), t, features)
        return (v, hidden) if return_hidden else v


def validate_state_config(c: PolicyConfig) -> None:
    validate_bottleneck(c)
    if c.backbone not in BACKBONES:
        raise ValueError(f"policy.backbone: {c.backbone!r} is not one of {BACKBONES}")
    for name in ("hidden_dim", "num_blocks", "chunk_size", "num_inference_steps"):
        if getattr(c, name) < 1:
            raise ValueError(f"policy.{name} must be at least 1, got {getattr(c, name)}")
    if not 1 <= c.n_action_steps <= c.chunk_size:
        raise ValueError(f"policy.n_action_steps {c.n_action_steps} must be in [1, chunk_size={c.chunk_size}]")
    if c.cameras:
        raise ValueError(f"policy.cameras {c.cameras}: a state_flow policy reads no images (set policy.cameras=[])")

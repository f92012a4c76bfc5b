"""Stochastic sampling of a flow policy with exact log-probs, and their recompute (docs/ALGORITHMS.md section 1).

The ODE sampler is deterministic and has no likelihood. For policy gradients a
denoising step x_k -> x_{k+1} (time t -> t - dt) can be made Gaussian:

- "sde" (Flow-SDE): mean and std from the SDE with the same marginals as the
  ODE, noise level ``noise_level``; the maths is the fused op
  :func:`vla.kernels.flow_sde_step` / :func:`vla.kernels.flow_sde_log_prob`.
- "noise" (Flow-Noise): the plain Euler mean, std from a small learned
  :class:`NoiseHead` bounded in [0.08, 0.16]; dropped at deployment.
- "ode": no noise, log-prob 0 (deployment, evaluation).

Which steps are stochastic: "mixed" (pi-RL's default) picks one random step
per rollout, the others are ODE steps; "joint" makes every step stochastic.
``mixed_steps`` = m > 0 draws the mixed step from the first m steps only. The
initial noise x0 explains most of an action chunk's spread and is not in the
log-prob; early, high-noise steps inject noise comparable to it (measured in
benchmarks/flow_exploration.py; on Lift this did not help RL, docs/DECISIONS.md).

Reduction (pi-RL's): the log-prob of a chain is summed over action dims, over
the stochastic steps and over the EXECUTED rows of the chunk (the first
``n_action_steps``); ``row_log_prob`` / ``per_row=True`` keep one term per
executed row (summed over dims and steps) for per-action-row PPO ratios.
Noise is only injected into executed rows; the other rows follow the
deterministic Euler step, so they are functions of the executed noise and the
log-prob is the exact density of the whole stored chain.

Chain layout: ``chain[:, 0]`` is the initial noise at t = 1, ``chain[:, k + 1]``
the sample after step k (time ``1 - (k + 1) / K``), ``chain[:, K]`` the
normalised action chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vla.kernels import flow_gaussian_log_prob, flow_sde_log_prob, flow_sde_step

MODES = ("ode", "sde", "noise")
SDE_MODES = ("mixed", "joint")
LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class ChainSample:
    """One sampled action chunk per batch row, with everything needed to recompute its log-prob."""

    actions: torch.Tensor  # [B, H, A] normalised action chunk (= chain[:, -1])
    chain: torch.Tensor  # [B, K + 1, H, A] denoising chain, chain[:, 0] the initial noise
    step_mask: torch.Tensor  # [B, K] bool, True = stochastic step
    log_prob: torch.Tensor  # [B] summed over dims, stochastic steps and executed rows
    row_log_prob: torch.Tensor  # [B, n_executed] the same, per executed row (sums to log_prob)
    entropy: torch.Tensor  # [B] entropy of the stochastic steps' Gaussians (same reduction)
    std_mean: torch.Tensor  # [B] mean std over the executed elements of stochastic steps (0 if none)
    pooled: torch.Tensor  # [B, width] masked-mean prefix features (value heads read these), detached
    # Per-row choices the policy made before its actions, [B, ...] each (a latent-reasoning policy's thought:
    # latents, lengths, the length's log-prob; vla/policy/state_flow/reasoning.py), or None.
    reasoning: dict[str, torch.Tensor] | None = None


class NoiseHead(nn.Module):
    """Flow-Noise std: expert features [.., W] -> std [.., A] in [std_min, std_max].

    log std = log std_min + (log std_max - log std_min) * sigmoid(mlp(features)); the last
    layer starts at zero so training begins at the geometric mean of the bounds."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: int = 128, std_min: float = 0.08,
                 std_max: float = 0.16):
        super().__init__()
        if not 0 < std_min < std_max:
            raise ValueError(f"NoiseHead needs 0 < std_min < std_max, got {std_min}, {std_max}")
        self.feature_dim, self.action_dim, self.hidden = feature_dim, action_dim, hidden
        self.std_min, self.std_max = std_min, std_max
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.SiLU(), nn.Linear(hidden, action_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lo, hi = math.log(self.std_min), math.log(self.std_max)
        return torch.exp(lo + (hi - lo) * torch.sigmoid(self.net(features.float())))

    def config(self) -> dict:
        return {"feature_dim": self.feature_dim, "action_dim": self.action_dim, "hidden": self.hidden,
                "std_min": self.std_min, "std_max": self.std_max}


# ------------------------------------------------------------------ helpers
def _check_args(mode: str, sde_mode: str, noise_level: float, noise_head: NoiseHead | None) -> None:
    if mode not in MODES:
        raise ValueError(f"sampling mode {mode!r} is not one of {MODES}")
    if sde_mode not in SDE_MODES:
        raise ValueError(f"sde_mode {sde_mode!r} is not one of {SDE_MODES}")
    if mode == "sde" and not noise_level >= 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if mode == "noise" and noise_head is None:
        raise ValueError("mode 'noise' (Flow-Noise) needs a noise_head (vla.policy.sampling.NoiseHead)")


def step_times(num_steps: int) -> list[float]:
    """Flow time at the start of each denoising step, as FlowVLAPolicy.sample_actions computes it."""
    dt = 1.0 / num_steps
    return [1.0 - k * dt for k in range(num_steps)]


def times_of_steps(steps: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Flow time [N] (float32) at the start of denoising steps [N], with step_times' float arithmetic,
    so a recomputed velocity sees bit for bit the t the sampler used."""
    return (1.0 - steps.to(torch.float64) * (1.0 / num_steps)).to(torch.float32)


def executed_rows(batch: int, chunk: int, n_executed: int, device) -> torch.Tensor:
    """[B, H] bool: True for the rows of the chunk that the robot executes."""
    if not 1 <= n_executed <= chunk:
        raise ValueError(f"n_executed must be in [1, chunk_size={chunk}], got {n_executed}")
    rows = torch.zeros(batch, chunk, dtype=torch.bool, device=device)
    rows[:, :n_executed] = True
    return rows


def draw_step_mask(batch: int, num_steps: int, mode: str, sde_mode: str, generator=None,
                   device="cpu", mixed_steps: int = 0) -> torch.Tensor:
    """[B, K] bool: which denoising steps are stochastic (mixed: one uniformly random step per row,
    among the first mixed_steps steps when mixed_steps > 0)."""
    if mode == "ode":
        return torch.zeros(batch, num_steps, dtype=torch.bool, device=device)
    if sde_mode == "joint":
        return torch.ones(batch, num_steps, dtype=torch.bool, device=device)
    if not 0 <= mixed_steps <= num_steps:
        raise ValueError(f"mixed_steps must be in [0, num_steps={num_steps}] (0 = all steps), got {mixed_steps}")
    pick = torch.randint(0, mixed_steps or num_steps, (batch,), generator=generator,
                         device=generator.device if generator is not None else "cpu")
    return nn.functional.one_hot(pick, num_steps).bool().to(device)


def _randn(shape, generator, device) -> torch.Tensor:
    # Drawn on the generator's device (a CPU generator keeps runs reproducible on any device).
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def select_cache(cache, rows: torch.Tensor):
    """The encoded observation of the given batch rows (rows may repeat). Every policy type's
    encode_observation returns a conditioning object with select(rows) and pooled()."""
    return cache.select(rows)


def _prior_log_prob(x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """log N(x0; 0, I) per row, zero outside the executed rows, [B, H] (Flow-Noise's chain log-prob starts with it)."""
    terms = -0.5 * x0.float().pow(2) - 0.5 * LOG_2PI
    return terms.sum(-1) * rows


# ------------------------------------------------------------------ sampling
@torch.no_grad()
def sample_chain(policy, batch: dict, mode: str = "sde", sde_mode: str = "mixed", noise_level: float = 0.5,
                 noise_head: NoiseHead | None = None, generator: torch.Generator | None = None,
                 n_executed: int | None = None, num_steps: int | None = None, mixed_steps: int = 0,
                 initial_noise: torch.Tensor | None = None) -> ChainSample:
    """Sample a normalised action chunk per row and the log-prob of its denoising chain.

    Args:
        policy: a FlowVLAPolicy.
        batch: observation batch (observations_to_batch's keys).
        mode: "sde" (Flow-SDE), "noise" (Flow-Noise, needs noise_head) or "ode" (no noise).
        sde_mode: "mixed" (one random stochastic step per row) or "joint" (every step).
        noise_level: the Flow-SDE noise level a (0 gives exactly the Euler ODE).
        generator: torch.Generator for every random draw (initial noise, step choice, step noise).
        n_executed: rows of the chunk counted in the log-prob (default policy.config.n_action_steps).
        num_steps: denoising steps K (default policy.config.num_inference_steps).
        mixed_steps: in mixed mode, draw the stochastic step among the first mixed_steps steps (0 = all).
        initial_noise: [B, H, A] chain start x0 (default: drawn from the generator).
    """
    _check_args(mode, sde_mode, noise_level, noise_head)
    c = policy.config
    k_steps = num_steps or c.num_inference_steps
    n_exec = n_executed or c.n_action_steps
    device = policy.device
    # A policy with stochastic choices before its actions (latent reasoning's length) draws them here.
    explore = getattr(policy, "explore_observation", None)
    cache, state_token = policy.encode_observation(batch) if explore is None else explore(batch, generator)
    b = state_token.shape[0]
    dt = 1.0 / k_steps
    rows = executed_rows(b, c.chunk_size, n_exec, device)
    step_mask = draw_step_mask(b, k_steps, mode, sde_mode, generator, device, mixed_steps)

    shape = (b, c.chunk_size, c.action_dim)
    if initial_noise is not None and tuple(initial_noise.shape) != shape:
        raise ValueError(f"initial_noise has shape {tuple(initial_noise.shape)}, the batch needs {shape}")
    x = _randn(shape, generator, device) if initial_noise is None else initial_noise.to(device)
    chain = [x]
    log_prob = torch.zeros(b, c.chunk_size, device=device)  # per row until the end
    entropy = torch.zeros(b, device=device)
    std_sum = torch.zeros(b, device=device)
    for k, t_value in enumerate(step_times(k_steps)):
        t = torch.full((b,), t_value, device=device)
        stochastic = step_mask[:, k, None] & rows  # [B, H]
        if mode == "noise":
            v, hidden = policy.velocity(cache, state_token, x, t, return_hidden=True)
            mu = x - dt * v
            std = noise_head(hidden) * stochastic[..., None]
            xi = _randn(x.shape, generator, device)
            x = torch.where(std > 0, mu + std * xi, mu)
            log_prob += flow_gaussian_log_prob(x, mu, std)
            pos = std > 0
            ent = torch.where(pos, 0.5 + 0.5 * LOG_2PI + torch.log(torch.where(pos, std, 1.0)), 0.0)
            entropy += ent.sum((-1, -2))
            std_sum += std.sum((-1, -2))
        else:
            v = policy.velocity(cache, state_token, x, t)
            if mode == "ode":
                x = x - dt * v
            else:
                xi = _randn(x.shape, generator, device)
                x, _, std, lp, ent = flow_sde_step(x, v, t, dt, noise_level, xi, stochastic_mask=stochastic,
                                                   return_entropy=True)
                log_prob += lp
                entropy += ent.sum(-1)
                std_sum += (std[..., 0] * c.action_dim).sum(-1)
        chain.append(x)
    chain_t = torch.stack(chain, dim=1)
    if mode == "noise":
        log_prob += _prior_log_prob(chain_t[:, 0], rows)
    n_elements = step_mask.sum(-1) * n_exec * c.action_dim
    std_mean = std_sum / n_elements.clamp(min=1)
    return ChainSample(actions=x, chain=chain_t, step_mask=step_mask, log_prob=log_prob.sum(-1),
                       row_log_prob=log_prob[:, :n_exec], entropy=entropy, std_mean=std_mean,
                       pooled=cache.pooled().detach(), reasoning=getattr(cache, "record", lambda: None)())


def chain_log_prob(policy, batch: dict, chain: torch.Tensor, step_mask: torch.Tensor, mode: str = "sde",
                   noise_level: float = 0.5, noise_head: NoiseHead | None = None, n_executed: int | None = None,
                   encoded: tuple | None = None, per_row: bool = False) -> torch.Tensor:
    """Log-prob [B] of stored chains under the policy's current weights, with gradients
    ([B, n_executed], one term per executed row, with ``per_row``).

    Only stochastic steps need a velocity: they are gathered into one batched call, so
    mixed mode costs one velocity evaluation per row whatever K is. ``encoded`` reuses an
    ``policy.encode_observation(batch)`` result (PPO also reads it for its value head).
    """
    _check_args(mode, "mixed", noise_level, noise_head)
    c = policy.config
    b, k_plus_1 = chain.shape[:2]
    k_steps = k_plus_1 - 1
    if step_mask.shape != (b, k_steps):
        raise ValueError(f"step_mask has shape {tuple(step_mask.shape)}, the chain needs {(b, k_steps)}")
    device = policy.device
    chain, step_mask = chain.to(device), step_mask.to(device)
    n_exec = n_executed or c.n_action_steps
    exec_rows = executed_rows(b, chain.shape[2], n_exec, device)
    log_prob = torch.zeros(b, chain.shape[2], device=device)
    if mode == "noise":
        log_prob = log_prob + _prior_log_prob(chain[:, 0], exec_rows)
    finish = (lambda lp: lp[:, :n_exec]) if per_row else (lambda lp: lp.sum(-1))
    if mode == "ode" or not bool(step_mask.any()):
        return finish(log_prob)
    cache, state_token = encoded if encoded is not None else policy.encode_observation(batch)
    dt = 1.0 / k_steps
    rows, steps = step_mask.nonzero(as_tuple=True)
    t = times_of_steps(steps, k_steps)
    x, x_next = chain[rows, steps], chain[rows, steps + 1]
    sub_cache = select_cache(cache, rows)
    sub_state = state_token.index_select(0, rows)
    row_mask = exec_rows.index_select(0, rows)
    if mode == "noise":
        v, hidden = policy.velocity(sub_cache, sub_state, x, t, return_hidden=True)
        mu = x - dt * v
        # The head reads detached features: its gradient shapes the exploration noise only, never the
        # deployed policy (which drops the head).
        std = noise_head(hidden.detach()) * row_mask[..., None]
        lp = flow_gaussian_log_prob(x_next, mu, std)
    else:
        v = policy.velocity(sub_cache, sub_state, x, t)
        lp = flow_sde_log_prob(x, v, x_next, t, dt, noise_level, stochastic_mask=row_mask)
    return finish(log_prob.index_add(0, rows, lp))

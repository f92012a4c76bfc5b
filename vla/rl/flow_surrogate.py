"""FPO's likelihood surrogate: the flow-matching loss of the executed action chunk stands in for its log-prob.

Flow Policy Optimization (McAllister et al., 2025, "Flow Matching Policy Gradients") replaces
log pi(a | o), which a flow policy does not have, by minus its conditional flow-matching loss on
the sampled action, a (scaled, shifted) evidence lower bound:

    L_theta(a | o) = (1/S) sum_j || v_theta(x_tj, t_j | o) - (eps_j - a) ||^2,   x_tj = t_j eps_j + (1 - t_j) a,

averaged over action dims (the SFT loss's reduction) and summed over the executed rows of the
chunk, with S pairs (t_j, eps_j) drawn once per decision and held fixed for the whole update, so the
PPO ratio exp(L_old - L_theta) is exactly 1 at the rollout weights. t follows the SFT time
distribution. The scale of L is a temperature of the trust region (Adam's steps do not depend on
it): summed over the 7 action dims, one Adam step at lr 3e-5 already moved the per-row ratio of
the Lift policy past target_kl 0.1; the mean over dims is the SFT loss and FPO's choice.

Why here (docs/DECISIONS.md): with Flow-SDE, only the stochastic denoising step is in the log-prob,
and on Lift that credits 14% of the executed actions' spread (benchmarks/flow_exploration.py); the
initial noise x0 explains the rest and no weight change is rewarded for it. The flow-matching loss
scores the action itself, wherever its randomness came from, so rollouts can use the deployed ODE
sampler and the policy trained is the policy deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vla.kernels import flow_interpolate
from vla.policy.sampling import select_cache


@dataclass
class FlowSurrogate:
    """Per decision, the fixed (t, eps) pairs and the surrogate log-prob at the rollout weights."""

    times: torch.Tensor  # [N, S]
    noises: torch.Tensor  # [N, S, H, A]
    old: torch.Tensor  # [N, n_executed]: minus the per-row flow-matching loss at the rollout weights

    def log_prob(self, policy, encoded: tuple, actions: torch.Tensor, idx: torch.Tensor,
                 per_row: bool) -> torch.Tensor:
        """The surrogate of decisions idx (actions [M, H, A], encoded by policy) under policy's current
        weights: [M, n_executed] per row, or [M] summed over the executed rows."""
        rows = surrogate_log_prob(policy, encoded, actions, self.times[idx], self.noises[idx], self.old.shape[1])
        return rows if per_row else rows.sum(-1)

    def old_log_probs(self, idx: torch.Tensor, per_row: bool) -> torch.Tensor:
        old = self.old[idx]
        return old if per_row else old.sum(-1)


def draw_times(policy, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """t from the policy's SFT time distribution (Beta(alpha, beta) * scale + offset), drawn from generator."""
    c = policy.config
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # Beta has no generator argument: a private, seeded draw
        torch.manual_seed(seed)
        beta = torch.distributions.Beta(torch.tensor(float(c.time_beta_alpha)), torch.tensor(float(c.time_beta_beta)))
        t = beta.sample(shape)
    return t * c.time_scale + c.time_offset


def surrogate_log_prob(policy, encoded: tuple, actions: torch.Tensor, times: torch.Tensor, noises: torch.Tensor,
                       n_executed: int) -> torch.Tensor:
    """Minus the flow-matching loss (mean over action dims) of actions [M, H, A] per executed row,
    [M, n_executed], averaged over the S pairs times [M, S] / noises [M, S, H, A]; gradients flow to
    policy (encoded is its encoding)."""
    m, s = times.shape
    rows = torch.arange(m, device=actions.device).repeat_interleave(s)
    cache, state_token = encoded
    a = actions[rows].float()
    eps = noises.reshape(m * s, *noises.shape[2:]).to(a)
    t = times.reshape(m * s).to(a)
    x_t = flow_interpolate(a, eps, t)
    v = policy.velocity(select_cache(cache, rows), state_token.index_select(0, rows), x_t, t)
    err = (v.float() - (eps - a)).pow(2)[:, :n_executed].mean(-1)  # [M * S, n_executed]
    return -err.reshape(m, s, n_executed).mean(1)


@torch.no_grad()
def build_flow_surrogate(policy, rollouts, n_samples: int, n_executed: int, generator: torch.Generator,
                         batch_size: int = 128) -> FlowSurrogate:
    """Draw the (t, eps) pairs of every decision and score them at the current (rollout) weights."""
    if n_samples < 1:
        raise ValueError(f"fpo_samples must be >= 1, got {n_samples}")
    actions = rollouts.chains[:, -1]
    n = actions.shape[0]
    times = draw_times(policy, (n, n_samples), generator)
    noises = torch.randn((n, n_samples, *actions.shape[1:]), generator=generator)
    old = []
    for idx in torch.arange(n).split(batch_size):
        encoded = policy.encode_observation(rollouts.observation_batch(idx))
        old.append(surrogate_log_prob(policy, encoded, actions[idx], times[idx], noises[idx], n_executed))
    return FlowSurrogate(times, noises, torch.cat(old))

"""End to end on a one-decision bandit: sampling, log-probs (or FPO's flow-matching surrogate),
advantages and the GRPO update together raise the success of a reward that depends only on the
sampled action chunk (no simulator); so does filtered BC on the deployed ODE sampler's successes.

The update tests check one update's direction; this checks that iterating sample -> update climbs."""

import pytest
import torch

from tests.policy.helpers import make_batch, make_policy
from vla.config import RLConfig
from vla.policy.sampling import sample_chain
from vla.rl.filtered_bc import filtered_bc_update
from vla.rl.flow_surrogate import build_flow_surrogate
from vla.rl.grpo import grpo_update
from vla.rl.rollout import Rollouts, SamplingSpec, Trajectory
from vla.rl.update import UpdateContext

STATES, GROUP = 4, 8


def score(actions: torch.Tensor, n_exec: int) -> torch.Tensor:
    """What the bandit pays for: the first action dim, averaged over the executed rows."""
    return actions[:, :n_exec, 0].mean(1)


def bandit_rollouts(policy, batch, spec: SamplingSpec, threshold, generator) -> Rollouts:
    """One decision per trajectory; success = score above the state's threshold."""
    s = sample_chain(policy, batch, spec.mode, spec.sde_mode, spec.noise_level, generator=generator,
                     mixed_steps=spec.mixed_steps)
    success = (score(s.actions, policy.config.n_action_steps) > threshold).float()
    n = success.numel()
    trajectories = [Trajectory(i, i // GROUP, i // GROUP, batch["task"][i], bool(success[i]), 1, 0.0, [i])
                    for i in range(n)]
    return Rollouts(observations=batch, chains=s.chain, step_masks=s.step_mask, log_probs=s.log_prob,
                    row_log_probs=s.row_log_prob, values=torch.zeros(n), rewards=success, env_rewards=success,
                    dones=torch.ones(n, dtype=torch.bool), entropy=s.entropy, std_mean=s.std_mean,
                    traj_ids=torch.arange(n), trajectories=trajectories)


@pytest.mark.parametrize("logprob_level,mixed_steps,surrogate,mode", [
    ("chunk", 0, "logprob", "sde"), ("action", 0, "logprob", "sde"), ("action", 2, "logprob", "sde"),
    ("action", 0, "fpo", "ode"),  # FPO with the deployed ODE sampler: all exploration from x0
    ("action", 0, "fpo-blind", "ode"),  # the same with the blind direction projected out
    ("action", 0, "filtered_bc", "ode"),  # no log-prob at all: flow matching on the successes
])
def test_grpo_climbs_a_chunk_bandit(logprob_level, mixed_steps, surrogate, mode):
    policy = make_policy(seed=0, num_inference_steps=4)
    batch = make_batch(b=STATES, seed=2)
    batch = {k: v.repeat_interleave(GROUP, 0) if torch.is_tensor(v) else [x for x in v for _ in range(GROUP)]
             for k, v in batch.items() if k in ("observation.images.agentview", "observation.state", "task")}
    g = torch.Generator().manual_seed(0)
    n_exec = policy.config.n_action_steps
    spec = SamplingSpec(mode, "mixed", 1.0, mixed_steps)
    with torch.no_grad():  # per state: the 70th percentile of the initial policy's scores (30% success)
        scores = torch.stack([score(sample_chain(policy, batch, mode, "mixed", 1.0, generator=g).actions, n_exec)
                              for _ in range(4)])
    threshold = scores.reshape(4, STATES, GROUP).transpose(0, 1).reshape(STATES, -1).quantile(0.7, dim=1)
    threshold = threshold.repeat_interleave(GROUP)
    algo = "filtered_bc" if surrogate == "filtered_bc" else "grpo"
    update = filtered_bc_update if algo == "filtered_bc" else grpo_update
    cfg = RLConfig(algo=algo, reward="success", logprob_level=logprob_level, lr=3e-4, epochs=2,
                   minibatch_size=16, target_kl=0.0)
    params = list(policy.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    rates = []
    for it in range(12):
        rollouts = bandit_rollouts(policy.eval(), batch, spec, threshold, g)
        rates.append(float(rollouts.rewards.mean()))
        ctx = UpdateContext(policy.train(), optimizer, params, spec, it, g, logprob_level=logprob_level)
        if surrogate.startswith("fpo"):
            ctx.flow_surrogate = build_flow_surrogate(policy, rollouts, 4, n_exec, g)
            ctx.project_out_blind = surrogate == "fpo-blind"
        update(ctx, rollouts, cfg)
    assert rates[0] < 0.5, rates
    assert sum(rates[-3:]) / 3 > 0.8, rates

"""FPO's flow-matching surrogate: it is the SFT loss of the executed rows, its ratio is exactly 1 at the
rollout weights, and its (t, eps) draws follow the SFT time distribution and the generator."""

import torch

from tests.policy.helpers import make_batch, make_policy
from vla.policy.flow_matching_policy import ACTION_KEY
from vla.policy.sampling import sample_chain
from vla.rl.flow_surrogate import build_flow_surrogate, draw_times, surrogate_log_prob
from vla.rl.rollout import Rollouts, Trajectory


def rollouts_of(policy, batch, generator) -> Rollouts:
    s = sample_chain(policy, batch, "ode", generator=generator)
    n = s.actions.shape[0]
    zeros = torch.zeros(n)
    return Rollouts(observations=batch, chains=s.chain, step_masks=s.step_mask, log_probs=s.log_prob,
                    row_log_probs=s.row_log_prob, values=zeros, rewards=zeros, env_rewards=zeros,
                    dones=torch.ones(n, dtype=torch.bool), entropy=s.entropy, std_mean=s.std_mean,
                    traj_ids=torch.arange(n), trajectories=[Trajectory(i, i, i, batch["task"][i], decisions=[i])
                                                            for i in range(n)])


def test_surrogate_is_minus_the_sft_loss_of_the_chunk():
    policy = make_policy(seed=0, n_action_steps=4)  # every row executed: the whole SFT loss
    batch = make_batch(b=5, seed=1)
    actions = policy.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY])
    g = torch.Generator().manual_seed(0)
    t, eps = torch.rand(5, generator=g), torch.randn(5, 4, 7, generator=g)
    with torch.no_grad():
        sft_loss, _ = policy(batch, noise=eps, time=t)  # mean over rows, dims and the batch
        surrogate = surrogate_log_prob(policy, policy.encode_observation(batch), actions, t[:, None], eps[:, None], 4)
    assert surrogate.shape == (5, 4)
    torch.testing.assert_close(-surrogate.sum() / (5 * 4), sft_loss, rtol=1e-5, atol=1e-6)


def test_only_executed_rows_count_and_samples_are_averaged():
    policy = make_policy(seed=0)  # chunk 4, 2 executed rows
    batch = make_batch(b=3, seed=1)
    encoded = policy.encode_observation(batch)
    a = torch.randn(3, 4, 7)
    t, eps = torch.rand(3, 2), torch.randn(3, 2, 4, 7)
    with torch.no_grad():
        both = surrogate_log_prob(policy, encoded, a, t, eps, 2)
        each = [surrogate_log_prob(policy, encoded, a, t[:, j:j + 1], eps[:, j:j + 1], 2) for j in range(2)]
        changed = eps.clone()
        changed[:, :, 2:] += 5.0  # noise on the rows the robot does not execute
        x_t_unexecuted = surrogate_log_prob(policy, encoded, a, t, changed, 2)
    assert both.shape == (3, 2)
    torch.testing.assert_close(both, (each[0] + each[1]) / 2)
    assert not torch.allclose(both, x_t_unexecuted)  # they still condition the executed rows' velocity
    assert (both <= 0).all()


def test_ratio_is_one_at_the_rollout_weights_and_draws_are_reproducible():
    policy = make_policy(seed=0)
    batch = make_batch(b=6, seed=2)
    rollouts = rollouts_of(policy, batch, torch.Generator().manual_seed(0))
    first = build_flow_surrogate(policy, rollouts, 3, 2, torch.Generator().manual_seed(5), batch_size=4)
    again = build_flow_surrogate(policy, rollouts, 3, 2, torch.Generator().manual_seed(5), batch_size=4)
    assert torch.equal(first.times, again.times) and torch.equal(first.noises, again.noises)
    idx = torch.tensor([4, 1, 5])
    with torch.no_grad():
        new = surrogate_log_prob(policy, policy.encode_observation(rollouts.observation_batch(idx)),
                                 rollouts.chains[idx, -1], first.times[idx], first.noises[idx], 2)
    # other batch compositions round differently in float32 (values near 4): ratio 1 to 1e-5
    ratio = torch.exp(new - first.old_log_probs(idx, per_row=True))
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)
    assert first.old_log_probs(idx, per_row=False).shape == (3,)


def test_times_follow_the_sft_distribution():
    policy = make_policy(seed=0)
    c = policy.config
    t = draw_times(policy, (20000,), torch.Generator().manual_seed(0))
    assert float(t.min()) >= c.time_offset and float(t.max()) <= c.time_offset + c.time_scale
    # Beta(alpha, beta) mean, shifted and scaled
    expected = c.time_beta_alpha / (c.time_beta_alpha + c.time_beta_beta) * c.time_scale + c.time_offset
    assert abs(float(t.mean()) - expected) < 0.01
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    draw_times(policy, (10,), torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(1), before)  # the global RNG is left as it was

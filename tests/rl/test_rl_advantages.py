"""GRPO group advantages, dynamic sampling, GAE, the clipped loss wrapper and the finiteness guard."""

import math

import pytest
import torch

from vla.rl.advantages import centre_per_group, dynamic_sampling_keep, gae, group_normalized_advantages
from vla.rl.losses import NonFiniteError, check_finite, policy_loss, value_loss


def test_group_advantages_match_the_formula():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv = group_normalized_advantages(rewards, groups)
    r0 = rewards[:4]
    expected0 = (r0 - r0.mean()) / (r0.std() + 1e-6)
    torch.testing.assert_close(adv[:4], expected0)
    assert adv[0] > 0 > adv[1]
    # Each group's advantages sum to zero.
    assert abs(float(adv[:4].sum())) < 1e-5 and abs(float(adv[4:].sum())) < 1e-5


def test_uniform_groups_and_singletons_get_zero_advantage():
    adv = group_normalized_advantages(torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1, 2]))
    assert torch.all(adv == 0)


def test_group_advantages_ignore_order():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 1, 0, 1, 0, 1])
    perm = torch.tensor([5, 2, 0, 4, 1, 3])
    torch.testing.assert_close(group_normalized_advantages(rewards, groups)[perm],
                               group_normalized_advantages(rewards[perm], groups[perm]))


def test_batch_std_keeps_small_differences_small():
    # group 0's returns barely differ (noise), group 1's differ a lot
    rewards = torch.tensor([0.10, 0.11, 0.20, 0.90])
    groups = torch.tensor([0, 0, 1, 1])
    per_group = group_normalized_advantages(rewards, groups)
    assert torch.allclose(per_group[:2].abs(), per_group[2:].abs(), atol=1e-3)  # both blown up to unit scale
    batch = group_normalized_advantages(rewards, groups, std_scope="batch")
    centred = torch.tensor([-0.005, 0.005, -0.35, 0.35], dtype=torch.float64)
    torch.testing.assert_close(batch, (centred / (centred.std() + 1e-6)).float())
    assert batch[:2].abs().max() < 0.05 * batch[2:].abs().max()
    with pytest.raises(ValueError, match="std_scope"):
        group_normalized_advantages(rewards, groups, std_scope="token")


def test_dynamic_sampling_keeps_only_informative_groups():
    success = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    keep = dynamic_sampling_keep(success, groups, 0.1, 0.9)
    assert keep.tolist() == [False] * 8 + [True] * 4
    assert dynamic_sampling_keep(success, groups, 0.0, 1.0).all()
    with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
        dynamic_sampling_keep(success, groups, 0.9, 0.1)


def test_gae_limits_and_terminals():
    rewards = torch.tensor([0.0, 0.0, 1.0])
    values = torch.tensor([0.2, 0.5, 0.7])
    dones = torch.tensor([False, False, True])
    g = 0.9
    # lambda = 1: Monte-Carlo return minus value.
    adv, ret = gae(rewards, values, dones, [[0, 1, 2]], gamma=g, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([g * g, g, 1.0]))
    torch.testing.assert_close(adv, ret - values)
    # lambda = 0: one-step TD errors; the terminal step does not bootstrap.
    adv0, _ = gae(rewards, values, dones, [[0, 1, 2]], gamma=g, lam=0.0)
    torch.testing.assert_close(adv0, torch.tensor([g * 0.5 - 0.2, g * 0.7 - 0.5, 1.0 - 0.7]))


def test_gae_keeps_interleaved_trajectories_apart():
    # Two trajectories interleaved as a vector env stores them.
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0])
    values = torch.zeros(4)
    dones = torch.tensor([False, False, True, True])
    adv, _ = gae(rewards, values, dones, [[0, 2], [1, 3]], gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([0.5, 0.0, 1.0, 0.0]))


def test_clip_higher_is_asymmetric():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 1.1, 0.5, 0.9])).requires_grad_()
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, stats = policy_loss(new, old, adv, clip_low=0.2, clip_high=0.28)
    loss.backward()
    # ratio 1.5 > 1.28 with A > 0 and ratio 0.5 < 0.8 with A < 0 are clipped: no gradient.
    assert new.grad[0] == 0 and new.grad[2] == 0
    assert new.grad[1] != 0 and new.grad[3] != 0
    expected = -(1.28 * 1 + 1.1 * 1 - 0.8 * 1 - 0.9 * 1) / 4
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-6)
    assert math.isclose(stats["clip_fraction"], 0.5, rel_tol=1e-6)


def test_ratio_one_gives_the_plain_policy_gradient():
    logp = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5])
    loss, stats = policy_loss(logp, logp.detach(), adv, 0.2, 0.28)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv / 3)
    assert stats["clip_fraction"] == 0 and abs(stats["approx_kl"]) < 1e-7


def test_per_row_ratios_share_their_decisions_advantage():
    # Two decisions, three executed rows each: six ratios, each clipped on its own.
    old = torch.zeros(2, 3)
    new = torch.log(torch.tensor([[1.5, 1.1, 1.0], [0.5, 0.9, 1.0]])).requires_grad_()
    loss, stats = policy_loss(new, old, torch.tensor([1.0, -1.0]), clip_low=0.2, clip_high=0.28)
    flat, _ = policy_loss(new.detach().reshape(-1), old.reshape(-1), torch.tensor([1.0] * 3 + [-1.0] * 3), 0.2, 0.28)
    assert math.isclose(float(loss.detach()), float(flat), rel_tol=1e-6)
    assert math.isclose(float(loss.detach()), -(1.28 + 1.1 + 1.0 - 0.8 - 0.9 - 1.0) / 6, rel_tol=1e-6)
    loss.backward()
    assert new.grad[0, 0] == 0 and new.grad[1, 0] == 0 and (new.grad[:, 1:] != 0).all()
    assert math.isclose(stats["clip_fraction"], 2 / 6, rel_tol=1e-6)


def test_value_loss_is_half_mse():
    assert math.isclose(float(value_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0]))), 0.5 * (1 + 4) / 2)


def test_check_finite_names_quantity_and_iteration():
    check_finite("advantages", torch.ones(3), 2)
    with pytest.raises(NonFiniteError, match=r"advantages has NaN at iteration 4 \(epoch 1\)"):
        check_finite("advantages", torch.tensor([0.0, float("nan")]), 4, "epoch 1")
    with pytest.raises(NonFiniteError, match="log-prob has Inf at iteration 0"):
        check_finite("log-prob", torch.tensor([float("-inf")]), 0)


def test_shaped_rewards_make_success_worth_more_than_lasting():
    from types import SimpleNamespace

    from vla.rl.advantages import shaped_decision_rewards, trajectory_returns, varying_groups_keep

    # decisions 0-2: a success after 24 steps; decisions 3-7: a 40-step failure that kept collecting
    # a large dense reward (hovering next to the cube)
    env_rewards = torch.tensor([2.0, 3.0, 8.0, 7.0, 7.0, 7.0, 7.0, 7.0])
    trajs = [SimpleNamespace(success=True, steps=24, decisions=[0, 1, 2]),
             SimpleNamespace(success=False, steps=40, decisions=[3, 4, 5, 6, 7])]
    rewards = shaped_decision_rewards(env_rewards, trajs, horizon=40)
    # the success's bonus is the reward of staying successful (1 per step) until the time limit
    # (in units of the horizon: a return is at most 1)
    torch.testing.assert_close(rewards, (env_rewards + torch.tensor([0, 0, 16.0, 0, 0, 0, 0, 0])) / 40)
    returns = trajectory_returns(rewards, trajs)
    torch.testing.assert_close(returns, torch.tensor([29.0, 35.0]) / 40)
    assert env_rewards[:3].sum() < env_rewards[3:].sum()  # without the bonus lasting would pay more
    # at the full 200-step horizon the success returns far more than the failure
    assert trajectory_returns(shaped_decision_rewards(env_rewards, trajs, horizon=200), trajs)[0] > (35.0 + 100) / 200
    keep = varying_groups_keep(torch.tensor([1.0, 1.0, 2.0, 3.0]), torch.tensor([0, 0, 1, 1]))
    assert keep.tolist() == [False, False, True, True]


def test_centre_per_group_sums_each_group_to_zero_and_keeps_order():
    values = torch.tensor([1.0, 1.0, 1.0, -1.0, 2.0, 0.0, 5.0])  # group 0: a long success, one short failure
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    centred = centre_per_group(values, groups)
    for g in range(3):
        assert abs(float(centred[groups == g].sum())) < 1e-6
    assert torch.equal(centred[:4].argsort(stable=True), values[:4].argsort(stable=True))
    torch.testing.assert_close(centred[:4], torch.tensor([0.5, 0.5, 0.5, -1.5]))

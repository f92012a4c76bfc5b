"""GRPO and PPO updates on rollouts from the toy env."""

import copy
from types import SimpleNamespace

import pytest
import torch

from tests.policy.helpers import make_policy
from tests.rl.fake_env import FakeVectorEnv
from vla.config import RLConfig
from vla.policy.sampling import chain_log_prob
from vla.rl.grpo import grpo_update
from vla.rl.heads import ValueHead, value_inputs
from vla.rl.losses import NonFiniteError
from vla.rl.ppo import ppo_update
from vla.rl.rollout import RolloutEngine, SamplingSpec
from vla.rl.flow_surrogate import build_flow_surrogate
from vla.rl.losses import policy_loss
from vla.rl.update import UpdateContext, epoch_minibatches, minibatch_policy_loss, recompute_log_prob

SAMPLING = SamplingSpec("sde", "mixed", 0.5)


def rollouts_for(policy, value_head=None, seeds=(11, 22, 33, 44), group_size=4):
    engine = RolloutEngine(policy.eval(), FakeVectorEnv(4, {"max_episode_steps": 8}), SAMPLING, value_head=value_head)
    return engine.collect(list(seeds), group_size, torch.Generator().manual_seed(0))


def context(policy, lr=1e-3, value_head=None, iteration=0, logprob_level="chunk"):
    params = list(policy.parameters()) + (list(value_head.parameters()) if value_head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return UpdateContext(policy.train(), optimizer, params, SAMPLING, iteration, torch.Generator().manual_seed(1),
                         value_head=value_head, logprob_level=logprob_level)


def config(**overrides):
    cfg = RLConfig(epochs=1, minibatch_size=1000)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("logprob_level", ["chunk", "action"])
def test_grpo_raises_the_likelihood_of_successes_and_lowers_failures(logprob_level):
    policy = make_policy(seed=0)
    rollouts = rollouts_for(policy)
    trajs = rollouts.trajectories
    assert any(t.success for t in trajs) and not all(t.success for t in trajs)
    idx = torch.arange(len(rollouts))
    batch = rollouts.observation_batch(idx)
    stats = grpo_update(context(policy, lr=3e-4, logprob_level=logprob_level), rollouts,
                        config(dynamic_sampling=False))
    with torch.no_grad():
        after = chain_log_prob(policy, batch, rollouts.chains, rollouts.step_masks, "sde", 0.5)
    delta = after - rollouts.log_probs
    success = rollouts.trajectory_success()[rollouts.traj_ids].bool()
    groups = rollouts.trajectory_groups()[rollouts.traj_ids]
    informative = torch.tensor([0 < rollouts.trajectory_success()[rollouts.trajectory_groups() == g].mean() < 1
                                for g in groups])
    assert delta[success & informative].mean() > 0 > delta[~success & informative].mean()
    assert stats["skipped_update"] == 0 and stats["clip_fraction"] == 0  # one on-policy step: ratio 1


def test_dynamic_sampling_skips_groups_without_signal():
    policy = make_policy(seed=0)
    rollouts = rollouts_for(policy)
    # Make every trajectory a success: all groups are outside [0.1, 0.9].
    for t in rollouts.trajectories:
        t.success = True
    before = copy.deepcopy(policy.state_dict())
    stats = grpo_update(context(policy), rollouts, config())
    assert stats["skipped_update"] == 1 and stats["kept_groups"] == 0
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_nan_stops_the_update_before_the_weights_change():
    policy = make_policy(seed=0)
    rollouts = rollouts_for(policy)
    rollouts.log_probs[3] = float("nan")
    before = copy.deepcopy(policy.state_dict())
    with pytest.raises(NonFiniteError, match="old log-prob has NaN at iteration 7"):
        grpo_update(context(policy, iteration=7), rollouts, config(dynamic_sampling=False))
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_nan_in_the_recomputed_log_prob_is_caught():
    policy = make_policy(seed=0)
    rollouts = rollouts_for(policy)
    rollouts.chains[0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"log-prob \(recomputed\) has NaN at iteration 2"):
        grpo_update(context(policy, iteration=2), rollouts, config(dynamic_sampling=False))


def test_ppo_fits_the_value_head_and_updates_the_policy():
    policy = make_policy(seed=0)
    head = ValueHead(policy.config.width, policy.config.state_dim, hidden=64)
    rollouts = rollouts_for(policy, value_head=head)
    before = policy.action_out_proj.weight.detach().clone()
    ctx = context(policy, lr=1e-3, value_head=head)
    losses = [ppo_update(ctx, rollouts, config(epochs=1, minibatch_size=32))["value_loss"] for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses
    assert not torch.equal(before, policy.action_out_proj.weight)
    # The critic reads detached features: a value-loss gradient never reaches the policy.
    policy.zero_grad()
    idx = torch.arange(4)
    batch = rollouts.observation_batch(idx)
    cache, _ = policy.encode_observation(batch)
    head(*value_inputs(policy, batch, cache.pooled())).sum().backward()
    assert all(p.grad is None for p in policy.parameters())


def test_ppo_needs_a_value_head():
    policy = make_policy(seed=0)
    with pytest.raises(ValueError, match="value head"):
        ppo_update(context(policy), SimpleNamespace(), config())


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_target_kl_stops_the_epochs_once_the_policy_has_moved_that_far(algo):
    def run(target_kl):
        policy = make_policy(seed=0)
        value_head = ValueHead(policy.config.width, policy.config.state_dim, 32) if algo == "ppo" else None
        rollouts = rollouts_for(policy, value_head=value_head)
        update = grpo_update if algo == "grpo" else ppo_update
        cfg = config(dynamic_sampling=False, epochs=8, minibatch_size=16, target_kl=target_kl)
        return update(context(policy, lr=3e-3, value_head=value_head), rollouts, cfg)

    free, bounded = run(0.0), run(1e-3)
    assert free["kl_stopped"] == 0 and bounded["kl_stopped"] == 1
    assert 1 <= bounded["optimizer_steps"] < free["optimizer_steps"]
    # every step that ran was taken from a minibatch still within the bound
    assert bounded["approx_kl"] <= 1e-3 < free["approx_kl"]


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_shaped_reward_updates_run_and_keep_groups_that_binary_rewards_drop(algo):
    policy = make_policy(seed=0)
    value_head = ValueHead(policy.config.width, policy.config.state_dim, 32) if algo == "ppo" else None
    rollouts = rollouts_for(policy, value_head=value_head)
    for t in rollouts.trajectories:  # no group has a success: binary GRPO has nothing to learn from
        t.success = False
    before = copy.deepcopy(policy.state_dict())
    update = grpo_update if algo == "grpo" else ppo_update
    stats = update(context(policy, value_head=value_head), rollouts, config(reward="shaped"))
    assert stats["skipped_update"] == 0
    if algo == "grpo":
        assert grpo_update(context(make_policy(seed=0)), rollouts, config())["skipped_update"] == 1
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_shaped_reward_is_refused_for_libero_tasks():
    from vla.config import ConfigError
    from vla.rl.trainer import validate

    cfg = RLConfig(reward="shaped")
    cfg.env.task = "libero_spatial/0"
    with pytest.raises(ConfigError, match="reward=shaped needs a robosuite task"):
        validate(cfg)
    with pytest.raises(ConfigError, match="--reward"):
        validate(RLConfig(reward="dense"))


def deployed_drift(policy, ref, batch, x0) -> float:
    """Mean |ODE action(policy) - ODE action(ref)| from the same initial noise."""
    with torch.no_grad():
        return float((policy.sample_actions(batch, noise=x0) - ref.sample_actions(batch, noise=x0)).abs().mean())


def test_velocity_anchor_starts_at_zero_and_holds_the_deployed_policy_near_the_reference():
    ref = make_policy(seed=0).eval().requires_grad_(False)
    rollouts = rollouts_for(ref)
    batch = rollouts.observation_batch(torch.arange(len(rollouts)))
    x0 = torch.randn(len(rollouts), ref.config.chunk_size, ref.config.action_dim,
                     generator=torch.Generator().manual_seed(3))
    drift = {}
    for coef in (0.0, 10.0):
        policy = copy.deepcopy(ref).requires_grad_(True)
        ctx = context(policy, lr=1e-3)
        ctx.ref_policy, ctx.anchor = ref, True
        stats = grpo_update(ctx, rollouts, config(dynamic_sampling=False, epochs=6, minibatch_size=32,
                                                  anchor_coef=coef))
        assert stats["velocity_anchor"] > 0  # the policy moved, so later minibatches see a gap
        drift[coef] = deployed_drift(policy.eval(), ref, batch, x0)
    assert drift[10.0] < 0.5 * drift[0.0], drift

    # At the reference weights the anchor is exactly zero.
    policy = copy.deepcopy(ref)
    ctx = context(policy)
    ctx.ref_policy, ctx.anchor = ref, True
    new = recompute_log_prob(ctx, rollouts, torch.arange(8))
    assert float(new.anchor) == 0.0 and new.ref_log_prob is None


def flat_grad(value, params) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


@pytest.mark.parametrize("logprob_level", ["chunk", "action"])
def test_projecting_out_the_blind_direction(logprob_level):
    policy = make_policy(seed=0)
    rollouts = rollouts_for(policy)
    ctx = context(policy, logprob_level=logprob_level)
    ctx.flow_surrogate = build_flow_surrogate(policy, rollouts, 2, 2, torch.Generator().manual_seed(4))
    ctx.project_out_blind = True
    params, idx, cfg = ctx.params, torch.arange(12), config()
    for advantages in (torch.randn(12, generator=torch.Generator().manual_seed(5)), torch.full((12,), -0.7)):
        new = recompute_log_prob(ctx, rollouts, idx)
        projected, stats = minibatch_policy_loss(ctx, new, advantages, cfg)
        plain, _ = policy_loss(new.log_prob, new.old_log_prob, advantages, cfg.clip_low, cfg.clip_high)
        g, g_plain, d = (flat_grad(x, params) for x in (projected, plain, new.log_prob.mean()))
        assert float(projected.detach()) == float(plain.detach())  # the loss value is untouched, only its gradient
        cos = float(g_plain @ d / (g_plain.norm() * d.norm()))
        assert abs(stats["blind_cos"] - cos) < 1e-4
        assert float((g - (g_plain - (g_plain @ d) / (d @ d) * d)).norm()) < 1e-4 * float(g_plain.norm())
        assert abs(float(g @ d)) < 1e-5 * float(g_plain.norm() * d.norm())
        if advantages.unique().numel() == 1:
            # one advantage for every decision at the rollout weights (ratio 1): the whole gradient is blind
            assert abs(cos) > 0.999 and float(g.norm()) < 1e-3 * float(g_plain.norm())
        else:
            assert float(g.norm()) > 0.1 * float(g_plain.norm())


def test_minibatches_group_into_steps_weighted_by_their_decisions():
    groups = list(epoch_minibatches(torch.arange(23), 2, 5, torch.Generator().manual_seed(0), accumulate=2))
    assert len(groups) == 2 * 5  # minibatches of 5, 5, 5, 5, 3 per epoch
    steps = [[mb for mb in groups[i:j]] for i, j in ((0, 2), (2, 4), (4, 5))]
    assert [len(s) for s in steps] == [2, 2, 1] and all(s[0].first and s[-1].last for s in steps)
    assert not steps[0][0].last and not steps[0][1].first
    for step in steps:
        assert abs(sum(mb.weight for mb in step) - 1.0) < 1e-12
    assert sorted(torch.cat([mb.idx for mb in groups[:5]]).tolist()) == list(range(23))  # each epoch: all, once
    with pytest.raises(ValueError, match="grad_accumulation must be >= 1"):
        next(epoch_minibatches(torch.arange(3), 1, 2, torch.Generator(), accumulate=0))


@pytest.mark.parametrize("logprob_level", ["chunk", "action"])
def test_accumulated_minibatches_step_like_one_full_batch(logprob_level):
    ref = make_policy(seed=0)
    rollouts = rollouts_for(ref)
    weights, stats = [], []
    for size, accumulate in ((1000, 1), (7, 1000)):
        policy = copy.deepcopy(ref)
        ctx = context(policy, logprob_level=logprob_level)
        ctx.optimizer = torch.optim.SGD(ctx.params, lr=1.0)  # the step is the gradient (Adam's sign-like first step hides it)
        stats.append(grpo_update(ctx, rollouts,
                                 config(dynamic_sampling=False, minibatch_size=size, grad_accumulation=accumulate)))
        weights.append(policy.state_dict())
    assert stats[0]["optimizer_steps"] == stats[1]["optimizer_steps"] == 1
    floats = [k for k, v in weights[0].items() if v.is_floating_point()]
    moved = max(float((weights[0][k] - ref.state_dict()[k]).abs().max()) for k in floats)
    gap = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in floats)
    assert moved > 1e-4 and gap < 1e-4 * moved, (moved, gap)

"""Flow-SDE / Flow-Noise sampling: the properties of docs/ALGORITHMS.md section 1, on both policy types
(the VLA and the state policy share one sampling interface)."""

import math

import pytest
import torch

from tests.policy.helpers import make_batch, make_policy, make_state_policy
from vla.policy.sampling import NoiseHead, chain_log_prob, sample_chain


@pytest.fixture(scope="module", params=["flow_vla", "state_flow mlp", "state_flow unet"])
def policy(request):
    if request.param == "flow_vla":
        return make_policy(seed=0, num_inference_steps=4).eval()
    return make_state_policy(seed=0, backbone=request.param.split()[1], num_inference_steps=4).eval()


@pytest.fixture(scope="module")
def batch():
    return make_batch(b=5, seed=1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def sde_mean_std(x, v, t, dt, a):
    """docs/ALGORITHMS.md section 1 written out independently, in float64."""
    x, v = x.double(), v.double()
    t_den = t - dt if t >= 1.0 else t
    sigma = a * math.sqrt(t / (1.0 - t_den))
    mu = x - dt * (v + sigma**2 / (2 * t) * (x + (1 - t) * v))
    return mu, sigma * math.sqrt(dt)


def manual_sde_log_prob(policy, batch, sample, a):
    """Sum over stochastic steps and executed rows of Normal(mu, std).log_prob(x').sum()."""
    k_steps = sample.step_mask.shape[1]
    dt = 1.0 / k_steps
    n_exec = policy.config.n_action_steps
    with torch.no_grad():
        cache, state = policy.encode_observation(batch)
        total = torch.zeros(sample.chain.shape[0], dtype=torch.float64)
        for k in range(k_steps):
            t = 1.0 - k * dt
            x = sample.chain[:, k]
            v = policy.velocity(cache, state, x, torch.full((x.shape[0],), t))
            mu, std = sde_mean_std(x, v, t, dt, a)
            lp = torch.distributions.Normal(mu, std).log_prob(sample.chain[:, k + 1].double())
            total += (lp[:, :n_exec].sum((-1, -2))) * sample.step_mask[:, k]
    return total


def test_zero_noise_level_is_exactly_the_euler_ode(policy, batch):
    sde = sample_chain(policy, batch, "sde", "joint", noise_level=0.0, generator=gen(3))
    ode = sample_chain(policy, batch, "ode", generator=gen(3))
    assert torch.equal(sde.chain, ode.chain)
    assert torch.all(sde.log_prob == 0) and torch.all(ode.log_prob == 0)
    # ...and the ODE chain is the policy's own Euler sampler from the same initial noise.
    assert torch.equal(policy.sample_actions(batch, noise=ode.chain[:, 0]), ode.actions)


def test_noise_level_to_zero_converges_to_the_ode(policy, batch):
    ode = sample_chain(policy, batch, "ode", generator=gen(4)).actions
    gaps = [(sample_chain(policy, batch, "sde", "joint", a, generator=gen(4)).actions - ode).abs().max().item()
            for a in (1e-1, 1e-3, 1e-5)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3


@pytest.mark.parametrize("sde_mode", ["mixed", "joint"])
def test_log_prob_equals_torch_normal(policy, batch, sde_mode):
    sample = sample_chain(policy, batch, "sde", sde_mode, 0.5, generator=gen(5))
    expected = manual_sde_log_prob(policy, batch, sample, 0.5)
    torch.testing.assert_close(sample.log_prob.double(), expected, atol=1e-3, rtol=1e-5)
    assert sample.log_prob.abs().sum() > 0


@pytest.mark.parametrize("mode,sde_mode", [("sde", "mixed"), ("sde", "joint"), ("noise", "mixed"), ("noise", "joint")])
def test_ratio_is_exactly_one_at_the_old_parameters(policy, batch, mode, sde_mode):
    head = NoiseHead(policy.velocity_hidden_dim, policy.config.action_dim)
    sample = sample_chain(policy, batch, mode, sde_mode, 0.5, noise_head=head, generator=gen(6))
    new = chain_log_prob(policy, batch, sample.chain, sample.step_mask, mode, 0.5, noise_head=head)
    assert new.requires_grad
    ratio = torch.exp(new - sample.log_prob)
    if sde_mode == "mixed":  # same batch rows, same op order: bit for bit
        assert torch.equal(ratio, torch.ones_like(ratio))
    else:
        torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)


def test_steps_with_zero_std_contribute_nothing(policy, batch):
    sample = sample_chain(policy, batch, "sde", "joint", 0.5, generator=gen(7))
    k_steps = sample.step_mask.shape[1]
    per_step = [chain_log_prob(policy, batch, sample.chain,
                               torch.nn.functional.one_hot(torch.full((5,), k), k_steps).bool(), "sde", 0.5)
                for k in range(k_steps)]
    joint = chain_log_prob(policy, batch, sample.chain, sample.step_mask, "sde", 0.5)
    torch.testing.assert_close(joint, sum(per_step), atol=1e-4, rtol=1e-6)
    # Turning a step's noise off removes exactly that step's term.
    mask = sample.step_mask.clone()
    mask[:, 1] = False
    torch.testing.assert_close(chain_log_prob(policy, batch, sample.chain, mask, "sde", 0.5), joint - per_step[1],
                               atol=1e-4, rtol=1e-6)
    # No stochastic step: log-prob 0.
    none = chain_log_prob(policy, batch, sample.chain, torch.zeros_like(mask), "sde", 0.5)
    assert torch.all(none == 0)


def test_noise_only_in_executed_rows_which_alone_count(policy, batch):
    sample = sample_chain(policy, batch, "sde", "mixed", 0.5, generator=gen(8))
    n_exec = policy.config.n_action_steps
    # The unexecuted rows follow the deterministic step: same as a zero-noise chain from the same start.
    k = sample.step_mask.float().argmax(1)
    # Editing an unexecuted row of the stochastic step's output changes nothing in the log-prob...
    chain = sample.chain.clone()
    rows = torch.arange(5)
    chain[rows, k + 1, n_exec:] += 1.0
    same = chain_log_prob(policy, batch, chain, sample.step_mask, "sde", 0.5)
    torch.testing.assert_close(same, sample.log_prob, atol=1e-5, rtol=0)
    # ...while editing an executed row does.
    chain = sample.chain.clone()
    chain[rows, k + 1, 0] += 1.0
    assert not torch.allclose(chain_log_prob(policy, batch, chain, sample.step_mask, "sde", 0.5), sample.log_prob)


def test_mixed_mode_picks_one_random_step_per_rollout(policy):
    big = make_batch(b=64, seed=2)
    masks = sample_chain(policy, big, "sde", "mixed", 0.5, generator=gen(9)).step_mask
    assert torch.all(masks.sum(1) == 1)
    counts = masks.sum(0)
    assert torch.all(counts > 0), f"every step should be picked sometimes, got {counts.tolist()}"
    joint = sample_chain(policy, big, "sde", "joint", 0.5, generator=gen(9)).step_mask
    assert joint.all()


def test_same_generator_same_sample(policy, batch):
    a = sample_chain(policy, batch, "sde", "mixed", 0.5, generator=gen(10))
    b = sample_chain(policy, batch, "sde", "mixed", 0.5, generator=gen(10))
    c = sample_chain(policy, batch, "sde", "mixed", 0.5, generator=gen(11))
    assert torch.equal(a.chain, b.chain) and torch.equal(a.step_mask, b.step_mask)
    assert not torch.equal(a.chain, c.chain)


def test_flow_noise_log_prob_and_bounds(policy, batch):
    head = NoiseHead(policy.velocity_hidden_dim, policy.config.action_dim)
    with torch.no_grad():  # push the head far from its initialisation: std must stay in bounds
        head.net[-1].weight.normal_(0, 5.0)
    extreme = head(torch.randn(1000, policy.velocity_hidden_dim) * 100)
    assert extreme.min() >= 0.08 - 1e-7 and extreme.max() <= 0.16 + 1e-7
    assert extreme.max() - extreme.min() > 0.05  # it does use the range

    sample = sample_chain(policy, batch, "noise", "joint", noise_head=head, generator=gen(12))
    n_exec, k_steps = policy.config.n_action_steps, sample.step_mask.shape[1]
    dt = 1.0 / k_steps
    with torch.no_grad():
        cache, state = policy.encode_observation(batch)
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(sample.chain[:, 0, :n_exec].double()).sum((-1, -2))
        for k in range(k_steps):
            x = sample.chain[:, k]
            v, hidden = policy.velocity(cache, state, x, torch.full((5,), 1.0 - k * dt), return_hidden=True)
            mu, std = (x - dt * v).double(), head(hidden).double()
            lp = torch.distributions.Normal(mu, std).log_prob(sample.chain[:, k + 1].double())
            expected += lp[:, :n_exec].sum((-1, -2))
    torch.testing.assert_close(sample.log_prob.double(), expected, atol=1e-3, rtol=1e-5)
    assert torch.all((sample.std_mean >= 0.08 - 1e-6) & (sample.std_mean <= 0.16 + 1e-6))


def test_gradients_reach_policy_and_noise_head(policy, batch):
    head = NoiseHead(policy.velocity_hidden_dim, policy.config.action_dim)
    sample = sample_chain(policy, batch, "noise", "mixed", noise_head=head, generator=gen(13))
    policy.zero_grad()
    chain_log_prob(policy, batch, sample.chain, sample.step_mask, "noise", noise_head=head).sum().backward()
    assert sum(p.grad.abs().sum() for p in policy.parameters() if p.grad is not None) > 0
    assert head.net[0].weight.grad is not None  # zero-init last layer: the first layer's grad is 0, the last's is not
    assert head.net[-1].weight.grad.abs().sum() > 0
    policy.zero_grad()


def test_noise_head_is_not_part_of_the_policy(policy, tmp_path):
    keys = set(policy.state_dict())
    head = NoiseHead(policy.velocity_hidden_dim, policy.config.action_dim)
    sample_chain(policy, make_batch(b=2), "noise", "mixed", noise_head=head, generator=gen(14))
    assert set(policy.state_dict()) == keys
    policy.save_pretrained(tmp_path / "p")
    assert not any("noise" in p.name for p in (tmp_path / "p").iterdir())


def test_bad_arguments_are_named(policy, batch):
    with pytest.raises(ValueError, match="sampling mode 'sd' is not one of"):
        sample_chain(policy, batch, "sd")
    with pytest.raises(ValueError, match="sde_mode"):
        sample_chain(policy, batch, "sde", "both")
    with pytest.raises(ValueError, match="needs a noise_head"):
        sample_chain(policy, batch, "noise")
    sample = sample_chain(policy, batch, "sde", generator=gen(0))
    with pytest.raises(ValueError, match="step_mask has shape"):
        chain_log_prob(policy, batch, sample.chain, sample.step_mask[:, :2])


@pytest.mark.parametrize("mode,sde_mode", [("sde", "mixed"), ("sde", "joint"), ("noise", "joint")])
def test_per_row_log_probs_sum_to_the_chain_log_prob(policy, batch, mode, sde_mode):
    head = NoiseHead(policy.velocity_hidden_dim, policy.config.action_dim)
    sample = sample_chain(policy, batch, mode, sde_mode, 0.5, noise_head=head, generator=gen(9))
    n_exec = policy.config.n_action_steps
    assert sample.row_log_prob.shape == (batch["observation.state"].shape[0], n_exec)
    torch.testing.assert_close(sample.row_log_prob.sum(-1), sample.log_prob)
    with torch.no_grad():
        rows = chain_log_prob(policy, batch, sample.chain, sample.step_mask, mode, 0.5, noise_head=head, per_row=True)
    torch.testing.assert_close(rows, sample.row_log_prob, atol=1e-4, rtol=1e-5)
    # Each executed row carries its own terms: rows differ, and none is zero when a step was stochastic.
    assert (rows != 0).all() and not torch.allclose(rows[:, 0], rows[:, 1])


def test_mixed_steps_keeps_the_stochastic_step_early_and_the_log_prob_exact(policy):
    batch = make_batch(b=64, seed=3)
    sample = sample_chain(policy, batch, "sde", "mixed", 0.5, generator=gen(15), mixed_steps=2)
    assert torch.equal(sample.step_mask.sum(1), torch.ones(64, dtype=torch.long))
    steps = sample.step_mask.float().argmax(1)
    assert set(steps.tolist()) == {0, 1}  # 64 draws: both early steps, never a later one
    torch.testing.assert_close(sample.log_prob.double(), manual_sde_log_prob(policy, batch, sample, 0.5),
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="mixed_steps must be in"):
        sample_chain(policy, batch, "sde", "mixed", 0.5, generator=gen(15), mixed_steps=5)

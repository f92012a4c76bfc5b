"""LAPO (docs/ALGORITHMS.md section 5): the three ratios at the old parameters, r_z <= 1, latents past the
chosen length, the refusals, and runs of the loop on the toy env (logging, exact resume)."""

import json

import pytest
import torch

from tests.policy.helpers import make_state_policy
from tests.rl.fake_env import FakeVectorEnv
from vla.config import ConfigError, RLConfig
from vla.rl.heads import ValueHead
from vla.rl.lapo import lapo_loss, lapo_terms, latent_log_ratio
from vla.rl.rollout import RolloutEngine, SamplingSpec
from vla.rl.trainer import train_rl
from vla.rl.update import UpdateContext

SIGMA = 10.0


def thinking_policy(seed=0, **overrides):
    # the toy env reports the robot state only
    return make_state_policy(seed=seed, latent_reasoning=True, environment_state_dim=0, **overrides)


def collect(policy, seed=0, n_groups=2, group_size=3):
    engine = RolloutEngine(policy.eval(), FakeVectorEnv(3, {"cameras": ()}), SamplingSpec("sde", "mixed", 0.5))
    return engine.collect([10 + g for g in range(n_groups)], group_size, torch.Generator().manual_seed(seed))


def context(policy, logprob_level="chunk"):
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)
    return UpdateContext(policy, optimizer, list(policy.parameters()), SamplingSpec("sde", "mixed", 0.5), 0,
                         torch.Generator().manual_seed(0), value_head=ValueHead(32, 8), logprob_level=logprob_level)


def rl_config(**overrides) -> RLConfig:
    return RLConfig(algo="lapo", **overrides)


@pytest.mark.parametrize("logprob_level", ["chunk", "action"])
def test_all_three_ratios_are_one_at_the_old_parameters(logprob_level):
    policy = thinking_policy()
    rollouts = collect(policy)
    assert rollouts.reasoning["latents"].shape == (len(rollouts), 8, 32)
    policy.train()
    terms = lapo_terms(context(policy, logprob_level), rollouts, torch.arange(len(rollouts)), SIGMA)
    zero = lambda x: torch.zeros_like(x)
    torch.testing.assert_close(terms.action_log_prob - terms.old_action_log_prob, zero(terms.action_log_prob),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(terms.latent_log_ratio, zero(terms.latent_log_ratio), atol=1e-6, rtol=0)
    torch.testing.assert_close(terms.end_log_prob - terms.old_end_log_prob, zero(terms.end_log_prob), atol=1e-5, rtol=0)
    _, stats = lapo_loss(terms, torch.randn(len(rollouts)), rl_config())
    for name in ("action", "latent", "end"):
        assert stats[f"clip_fraction_{name}"] == 0.0
        assert stats[f"ratio_mean_{name}"] == pytest.approx(1.0, abs=1e-4)


def test_the_latent_ratio_never_exceeds_one():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        new, old = torch.randn(5, 8, 16, generator=g) * 3, torch.randn(5, 8, 16, generator=g) * 3
        lengths = torch.tensor([2, 4, 6, 8, 8])
        assert (latent_log_ratio(new, old, lengths, SIGMA) <= 0).all()
    # with weights moved away from the rollout's, the recomputed r_z is below one
    policy = thinking_policy()
    rollouts = collect(policy)
    with torch.no_grad():
        for p in policy.reasoner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    terms = lapo_terms(context(policy), rollouts, torch.arange(len(rollouts)), SIGMA)
    assert (terms.latent_log_ratio <= 0).all() and (terms.latent_log_ratio < 0).any()


def test_latents_past_the_chosen_length_do_not_change_the_loss():
    policy = thinking_policy()
    rollouts = collect(policy)
    with torch.no_grad():  # away from the old parameters, so every term has a gradient and a value to compare
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ctx, idx = context(policy), torch.arange(len(rollouts))
    advantages = torch.randn(len(rollouts), generator=torch.Generator().manual_seed(1))
    cfg = rl_config()
    loss, _ = lapo_loss(lapo_terms(ctx, rollouts, idx, SIGMA), advantages, cfg)
    lengths = rollouts.reasoning["lengths"]
    assert (lengths < 8).any()
    latents = rollouts.reasoning["latents"]
    for row, n in enumerate(lengths.tolist()):
        latents[row, n:] = torch.randn_like(latents[row, n:]) * 10
    changed, _ = lapo_loss(lapo_terms(ctx, rollouts, idx, SIGMA), advantages, cfg)
    assert torch.equal(loss, changed)
    # ... while a latent within the length does
    row = int(torch.nonzero(lengths >= 2)[0])
    latents[row, 0] += 1.0
    moved, _ = lapo_loss(lapo_terms(ctx, rollouts, idx, SIGMA), advantages, cfg)
    assert not torch.equal(loss, moved)


# ------------------------------------------------------------------ the loop on the toy env
def fake_env(n, kwargs):
    return FakeVectorEnv(n, kwargs)


def run_config(policy_dir, out, **overrides) -> RLConfig:
    cfg = RLConfig(algo="lapo", policy=str(policy_dir), output_dir=str(out), iterations=3, n_groups=2, group_size=2,
                   n_envs=2, lr=3e-4, epochs=2, minibatch_size=4, seed=7)
    cfg.env.max_episode_steps = 6
    cfg.eval.n_episodes = 0
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def thinking_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("lapo") / "policy"
    thinking_policy(seed=0).save_pretrained(path)
    return path


def test_a_run_logs_the_lengths_the_clip_fractions_and_the_thinking_time(thinking_dir, tmp_path):
    out = tmp_path / "run"
    train_rl(run_config(thinking_dir, out), progress=False, make_vec_env=fake_env)
    history = json.loads((out / "history.json").read_text())["history"]
    assert len(history) == 3
    for record in history:
        shares = [record[f"length_share_{n}"] for n in (2, 4, 6, 8)]
        assert sum(shares) == pytest.approx(1.0)
        assert 2 <= record["length_mean"] <= 8 and record["think_ms_per_chunk"] > 0
        for name in ("action", "latent", "end"):
            assert 0 <= record[f"clip_fraction_{name}"] <= 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(out / "tb"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/length_mean", "train/clip_fraction_latent", "train/think_ms_per_chunk"} <= tags


def test_resume_reproduces_an_uninterrupted_run(thinking_dir, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_rl(run_config(thinking_dir, whole), progress=False, make_vec_env=fake_env)
    train_rl(run_config(thinking_dir, parts, stop_after=1), progress=False, make_vec_env=fake_env)
    train_rl(run_config(thinking_dir, parts, resume=True), progress=False, make_vec_env=fake_env)
    timing = ("rollout_s", "logprob_s", "update_s", "iteration_s", "cpu_s", "think_ms_per_chunk")
    strip = lambda out: [{k: v for k, v in h.items() if k not in timing}
                         for h in json.loads((out / "history.json").read_text())["history"]]
    assert strip(whole) == strip(parts)


def test_a_policy_that_does_not_think_is_refused_with_the_way_to_train_one(tmp_path):
    plain = tmp_path / "plain"
    make_state_policy(seed=0, environment_state_dim=0).save_pretrained(plain)
    with pytest.raises(ConfigError, match=r"has none.*--policy.latent_reasoning=true"):
        train_rl(run_config(plain, tmp_path / "out"), progress=False, make_vec_env=fake_env)


def test_bad_lapo_options_are_refused(thinking_dir, tmp_path):
    bad = run_config(thinking_dir, tmp_path / "a")
    bad.lapo.latent_sigma = 0.0
    with pytest.raises(ConfigError, match="--lapo.latent_sigma must be > 0"):
        train_rl(bad, progress=False, make_vec_env=fake_env)
    other = run_config(thinking_dir, tmp_path / "b", algo="ppo")
    other.lapo.latent_coef = 0.5
    with pytest.raises(ConfigError, match="--lapo.latent_coef: LAPO's options; --algo ppo does not use them"):
        train_rl(other, progress=False, make_vec_env=fake_env)
    with pytest.raises(ConfigError, match="--kl_coef: not built for --algo lapo"):
        train_rl(run_config(thinking_dir, tmp_path / "c", kl_coef=0.1), progress=False, make_vec_env=fake_env)


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_a_thinking_policy_is_refused_by_algorithms_whose_ratios_do_not_see_its_thought(thinking_dir, tmp_path, algo):
    # Their recompute thinks with the evaluation rule's length, not the one the rollout drew: the ratio at the
    # rollout's weights would not be 1.
    from vla.rl.update import recompute_log_prob

    policy = thinking_policy()
    rollouts = collect(policy)
    policy.train()
    recomputed = recompute_log_prob(context(policy), rollouts, torch.arange(len(rollouts)))
    assert not torch.allclose(recomputed.log_prob, recomputed.old_log_prob, atol=1e-3)
    cfg = run_config(thinking_dir, tmp_path / "out", algo=algo)
    with pytest.raises(ConfigError, match=f"--algo {algo} on the latent-reasoning policy.*--algo lapo"):
        train_rl(cfg, progress=False, make_vec_env=fake_env)
    assert not (tmp_path / "out" / "history.json").exists()

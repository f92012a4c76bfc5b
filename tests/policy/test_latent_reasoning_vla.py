"""Latent reasoning of the VLA (LAPO's thinking in the prefix stream): the length distribution, what the
action expert attends to, teacher forcing, the warm-up loss, checkpoints, and a LAPO iteration."""

import pytest
import torch

from tests.policy.helpers import make_batch, make_policy
from tests.rl.fake_env import FakeVectorEnv
from vla.config import RLConfig
from vla.policy.flow_vla.reasoning import think_in_prefix
from vla.policy.latent_reasoning import FUTURE_PAD_KEY, FUTURE_PREFIX
from vla.policy.registry import load_policy
from vla.rl.heads import ValueHead
from vla.rl.lapo import lapo_loss, lapo_terms
from vla.rl.rollout import RolloutEngine, SamplingSpec
from vla.rl.trainer import train_rl
from vla.rl.update import UpdateContext


def thinking_vla(seed=0, **overrides):
    return make_policy(seed=seed, latent_reasoning=True, **overrides).eval()


def test_length_probabilities_sum_to_one_and_the_expert_sees_only_the_chosen_latents():
    policy = thinking_vla()
    batch = make_batch(b=3)
    cache, state = policy.think(batch, lengths=torch.tensor([2, 4, 8]))
    r = cache.reasoning
    torch.testing.assert_close(r.length_log_probs.exp().sum(-1), torch.ones(3))
    assert r.latents.shape == (3, 8, policy.config.width)
    assert cache.mask[:, -8:].sum(-1).tolist() == [2, 4, 8]  # latents past the length are masked out
    # teacher forcing on the free-running thought reproduces it; stored latents past the length are never read
    forced, _ = policy.think(batch, lengths=r.lengths, latents=r.latents)
    torch.testing.assert_close(forced.reasoning.latents, r.latents, atol=1e-5, rtol=1e-5)
    changed = r.latents.clone()
    changed[0, 2:] += 3.0
    again, _ = policy.think(batch, lengths=r.lengths, latents=changed)
    x, t = torch.randn(3, 4, 7), torch.full((3,), 0.5)
    assert torch.equal(policy.velocity(again, state, x, t), policy.velocity(forced, state, x, t))


def test_warm_up_loss_and_checkpoint_round_trip(tmp_path):
    policy = thinking_vla(seed=1).train()
    batch = make_batch(b=2)
    batch[FUTURE_PREFIX + "observation.images.agentview"] = torch.randint(0, 256, (2, 8, 64, 64, 3), dtype=torch.uint8)
    batch[FUTURE_PAD_KEY] = torch.zeros(2, 8, dtype=torch.bool)
    torch.manual_seed(0)
    loss, info = policy(batch)
    assert set(info) == {"loss", "flow_loss", "end_loss", "latent_loss"}
    loss.backward()
    assert policy.reasoner.end.weight.grad.abs().sum() > 0
    policy.eval().save_pretrained(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    noise = torch.randn(2, 4, 7)
    assert loaded.reasoner is not None
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise), policy.predict_action_chunk(batch, noise=noise))


def test_lapo_ratios_are_one_at_the_old_parameters_and_a_run_completes(tmp_path):
    policy = thinking_vla(seed=2)
    engine = RolloutEngine(policy, FakeVectorEnv(2, {"cameras": ("agentview",)}), SamplingSpec("sde", "mixed", 0.5))
    rollouts = engine.collect([5], 2, torch.Generator().manual_seed(0))
    ctx = UpdateContext(policy.train(), torch.optim.SGD(policy.parameters(), lr=0.0), list(policy.parameters()),
                        SamplingSpec("sde", "mixed", 0.5), 0, torch.Generator().manual_seed(0),
                        value_head=ValueHead(policy.pooled_dim, 8))
    terms = lapo_terms(ctx, rollouts, torch.arange(len(rollouts)), 10.0)
    assert (terms.action_log_prob - terms.old_action_log_prob).abs().max() < 1e-3
    assert terms.latent_log_ratio.abs().max() < 1e-6 and (terms.latent_log_ratio <= 0).all()
    assert (terms.end_log_prob - terms.old_end_log_prob).abs().max() < 1e-4
    _, stats = lapo_loss(terms, torch.randn(len(rollouts)), RLConfig(algo="lapo"))
    assert stats["clip_fraction_latent"] == 0.0 and stats["clip_fraction_end"] == 0.0
    policy.save_pretrained(tmp_path / "vla")
    cfg = RLConfig(algo="lapo", policy=str(tmp_path / "vla"), output_dir=str(tmp_path / "rl"), iterations=1,
                   n_groups=1, group_size=2, n_envs=2, minibatch_size=8)
    cfg.env.max_episode_steps = 6
    cfg.eval.n_episodes = 0
    train_rl(cfg, progress=False, make_vec_env=lambda n, kwargs: FakeVectorEnv(n, kwargs))
    assert (tmp_path / "rl" / "policy" / "model.safetensors").is_file()


def test_teacher_forcing_needs_latents_and_lengths_together():
    policy = thinking_vla()
    cache, _ = policy.encode_prefix_and_state(make_batch(b=1))
    with pytest.raises(ValueError, match="both the stored latents and their lengths"):
        think_in_prefix(policy.transformer, cache, 8, forced=torch.zeros(1, 8, policy.config.width))

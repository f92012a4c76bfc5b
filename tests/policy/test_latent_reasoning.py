"""Latent reasoning of the state policy (LAPO's thinking): the length distribution, what the actions read,
teacher forcing, the warm-up loss, checkpoints and config checks."""

import json

import pytest
import torch

from tests.policy.helpers import make_batch, make_state_policy
from vla.policy.config import PolicyConfig
from vla.policy.registry import load_policy
from vla.policy.sampling import sample_chain
from vla.policy.state_flow.policy import FUTURE_PAD_KEY, FUTURE_PREFIX


def thinking_policy(seed=0, **overrides):
    return make_state_policy(seed=seed, latent_reasoning=True, **overrides).eval()


def with_future(batch, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = batch["observation.state"].shape[0]
    return {**batch, FUTURE_PREFIX + "observation.state": torch.randn(b, n, 8, generator=g),
            FUTURE_PREFIX + "observation.environment_state": torch.randn(b, n, 10, generator=g),
            FUTURE_PAD_KEY: torch.zeros(b, n, dtype=torch.bool)}


def test_length_probabilities_sum_to_one_over_the_candidates():
    policy = thinking_policy(latent_beta=0.5)
    condition, _ = policy.think(make_batch(b=5))
    probs = condition.reasoning.length_log_probs.exp()
    assert probs.shape == (5, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    assert set(condition.reasoning.lengths.tolist()) <= {2, 4, 6, 8}


def test_evaluation_takes_the_first_confident_length_else_the_most_likely():
    reasoner = thinking_policy().reasoner
    probs = torch.tensor([[0.001, 0.995, 0.002, 0.002],   # confident: 4
                          [0.1, 0.2, 0.6, 0.1],           # none confident: argmax 6
                          [0.0025, 0.0025, 0.0025, 0.9925]])  # confident at the last: 8
    assert reasoner.evaluation_lengths(probs.log(), 0.99).tolist() == [4, 6, 8]
    sampled = reasoner.sampled_lengths(torch.tensor([[0.0, 0.0, 1.0, 0.0]]).log(), torch.Generator().manual_seed(0))
    assert sampled.tolist() == [6]


def test_latents_past_the_chosen_length_change_nothing_the_actions_read():
    policy = thinking_policy()
    batch = make_batch(b=3)
    e = policy.embed(batch)
    z = policy.reasoner.think(e)
    lengths = torch.tensor([2, 4, 6])
    changed = z.clone()
    for row, n in enumerate(lengths.tolist()):
        changed[row, n:] = torch.randn_like(changed[row, n:]) * 5
    torch.testing.assert_close(policy.reasoner.pool(changed, lengths), policy.reasoner.pool(z, lengths), rtol=0, atol=0)
    # teacher forcing reads the stored latents within the length only; past it the chain runs on its own
    _, features = policy.think(batch, lengths=lengths, latents=z)
    _, features_changed = policy.think(batch, lengths=lengths, latents=changed)
    assert torch.equal(features, features_changed)
    # and at the policy's own latents, teacher forcing reproduces its free-running thought
    condition, _ = policy.think(batch, lengths=lengths, latents=z)
    torch.testing.assert_close(condition.reasoning.latents, z)


def test_rollout_sampling_draws_the_length_and_returns_the_thought():
    policy = thinking_policy(latent_beta=5.0)  # a flat length distribution: several lengths in 64 draws
    batch = make_batch(b=64)
    sample = sample_chain(policy, batch, generator=torch.Generator().manual_seed(0))
    r = sample.reasoning
    assert r["latents"].shape == (64, 8, 32) and r["lengths"].shape == (64,) and r["length_log_prob"].shape == (64,)
    assert len(set(r["lengths"].tolist())) > 1
    assert (r["length_log_prob"] <= 0).all() and (r["think_s"] > 0).all()
    # the same generator state draws the same lengths
    again = sample_chain(policy, batch, generator=torch.Generator().manual_seed(0)).reasoning
    assert torch.equal(again["lengths"], r["lengths"])


def test_warm_up_loss_has_its_three_terms_and_ignores_padded_targets():
    policy = thinking_policy().train()
    batch = with_future(make_batch(b=4))
    torch.manual_seed(0)
    loss, info = policy(batch)
    assert set(info) == {"loss", "flow_loss", "end_loss", "latent_loss"}
    assert loss.item() == pytest.approx(info["flow_loss"] + 0.1 * info["end_loss"] + info["latent_loss"], rel=1e-5)
    # every target past the episode's end: no latent term left, whatever the targets hold
    padded = {**batch, FUTURE_PAD_KEY: torch.ones(4, 8, dtype=torch.bool)}
    torch.manual_seed(0)
    assert policy(padded)[1]["latent_loss"] == 0.0
    # the targets are stop-gradient: no gradient reaches the future observations through the encoder
    future_state = batch[FUTURE_PREFIX + "observation.state"].clone().requires_grad_(True)
    loss, _ = policy({**batch, FUTURE_PREFIX + "observation.state": future_state})
    loss.backward()
    assert future_state.grad is None
    assert policy.reasoner.cell.weight_ih.grad.abs().sum() > 0  # the thinking learns from it


def test_warm_up_fits_future_targets_on_a_fixed_batch():
    policy = thinking_policy(seed=1).train()
    batch = with_future(make_batch(b=16, seed=2), seed=3)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    torch.manual_seed(0)
    latent = []
    for _ in range(60):
        loss, info = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        latent.append(info["latent_loss"])
    assert sum(latent[-5:]) / 5 < 0.7 * sum(latent[:5]) / 5


def test_checkpoint_round_trip_and_old_checkpoints_still_load(tmp_path):
    policy = thinking_policy(seed=3)
    batch, noise = make_batch(b=4), torch.randn(4, 4, 7)
    before = policy.predict_action_chunk(batch, noise=noise)
    policy.save_pretrained(tmp_path / "thinks")
    loaded = load_policy(tmp_path / "thinks")
    assert loaded.config.latent_reasoning and loaded.config.latent_lengths == [2, 4, 6, 8]
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise), before)
    # a checkpoint written before latent reasoning existed (no latent_* keys) loads as a policy that does not think
    make_state_policy(seed=4).save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    old = {k: v for k, v in config.items() if not k.startswith("latent_")}
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    plain = load_policy(tmp_path / "old")
    assert plain.reasoner is None and plain.predict_action_chunk(batch).shape == (4, 4, 7)


@pytest.mark.parametrize("overrides,match", [
    ({"latent_lengths": [2, 3]}, "positive multiple of policy.latent_group=2"),
    ({"latent_lengths": [4, 2]}, "strictly increasing"),
    ({"latent_lengths": [2, 2]}, "strictly increasing"),
    ({"latent_lengths": []}, "is empty"),
    ({"latent_group": 0}, "latent_group must be at least 1"),
    ({"latent_beta": 0.0}, "temperature"),
    ({"latent_eval_threshold": 1.5}, "latent_eval_threshold"),
    ({"latent_stride": 0}, "latent_stride"),
])
def test_inconsistent_latent_settings_are_refused_when_the_config_is_built(overrides, match):
    with pytest.raises(ValueError, match=match):
        PolicyConfig(**{"type": "state_flow", "latent_reasoning": True, **overrides})


def test_latent_reasoning_and_a_bottleneck_are_refused_together():
    with pytest.raises(ValueError, match="not both"):
        make_state_policy(latent_reasoning=True, vib_dim=4)

"""The variational bottleneck of a state policy (ZPRL's offline phase, docs/ALGORITHMS.md section 4):
it trains, its terms train only the bottleneck, deployment conditions on e_hat(mu(e)), and
`vla train --policy.init=<state_flow> --policy.vib_dim=N` adds one to a trained policy without
changing any of its weights."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.policy.helpers import ENV_STATE_DIM, bottleneck_gradients, make_batch, make_state_policy
from vla.config import ConfigError, TrainConfig
from vla.policy.checkpoint import STATS_FILE, WEIGHTS_FILE
from vla.policy.config import PolicyConfig
from vla.policy.registry import load_policy
from vla.policy.state_flow import StateFlowPolicy
from vla.policy.vib import VariationalBottleneck


def test_vib_policy_fits_a_fixed_batch():
    policy = make_state_policy(seed=1, vib_dim=4).train()
    batch = make_batch(b=16, seed=2)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses, infos = [], []
    for _ in range(50):
        loss, info = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        infos.append(info)
    assert set(infos[0]) == {"loss", "flow_loss", "vib_flow_loss", "vib_kl", "vib_reconstruction"}
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    # the generator through the bottleneck learns too, not only the direct flow term
    assert np.mean([i["vib_flow_loss"] for i in infos[-10:]]) < np.mean([i["vib_flow_loss"] for i in infos[:10]])


def test_bottleneck_terms_give_the_generator_and_encoder_no_gradient():
    policy = make_state_policy(seed=0, vib_dim=4).train()
    batch = make_batch(b=8, seed=1)
    g = torch.Generator().manual_seed(0)
    noise, time = torch.randn(8, 4, 7, generator=g), torch.rand(8, generator=g)

    full, flow_only, info, flow_loss = bottleneck_gradients(policy, batch, noise, time)
    assert flow_loss == pytest.approx(info["flow_loss"], rel=1e-6)
    generator = [n for n in full if n.startswith(("backbone.", "obs_encoder."))]
    assert generator
    for name in generator:
        assert full[name] is not None and torch.equal(full[name], flow_only[name]), name
    # ... and the bottleneck's terms do train the bottleneck, encoder and decoder
    assert all(full[n] is not None and full[n].abs().sum() > 0 for n in full if n.startswith("vib."))


def test_vib_losses_do_not_reach_the_embedding():
    vib = VariationalBottleneck(feature_dim=6, latent_dim=3, width=8)
    e = torch.randn(4, 6, requires_grad=True)
    e_hat, kl, reconstruction = vib.losses(e, generator=torch.Generator().manual_seed(0))
    assert e_hat.shape == (4, 6) and kl.item() >= 0 and reconstruction.item() >= 0
    (e_hat.sum() + kl + reconstruction).backward()
    assert e.grad is None
    with pytest.raises(ValueError, match="at least 1"):
        VariationalBottleneck(6, 0)


def test_deployment_conditions_on_the_reconstruction_of_the_mean(tmp_path):
    policy = make_state_policy(seed=0, vib_dim=4).eval()
    batch, noise = make_batch(b=3), torch.randn(3, 4, 7)
    chunk = policy.predict_action_chunk(batch, noise=noise)
    through_mean = policy.integrate(*policy.condition_from_latent(policy.bottleneck_encode(batch)[1]), noise=noise)
    assert torch.equal(chunk, policy.normalizer.unnormalize("action", through_mean))
    moved = policy.integrate(*policy.condition_from_latent(policy.bottleneck_encode(batch)[1] + 0.5), noise=noise)
    assert not torch.allclose(through_mean, moved)  # the latent decides the actions
    policy.save_pretrained(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert loaded.config.vib_dim == 4 and loaded.vib is not None
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise), chunk)


# ------------------------------------------------------------------------ adding a bottleneck to a trained policy
def write_state_dataset(root, episodes=2, length=8, seed=0):
    """A tiny LeRobot dataset with what a state policy reads: robot state 8, object state 10, actions 7."""
    from vla.data import LeRobotDatasetWriter

    features = {"observation.state": {"dtype": "float32", "shape": [8], "names": None},
                "observation.environment_state": {"dtype": "float32", "shape": [ENV_STATE_DIM], "names": None},
                "action": {"dtype": "float32", "shape": [7], "names": None}}
    rng = np.random.default_rng(seed)
    with LeRobotDatasetWriter(root, fps=20, robot_type="panda", features=features) as writer:
        for _ in range(episodes):
            for _ in range(length):
                writer.add_frame({"observation.state": rng.normal(size=8).astype(np.float32),
                                  "observation.environment_state": rng.normal(size=ENV_STATE_DIM).astype(np.float32),
                                  "action": rng.uniform(-1, 1, 7).astype(np.float32)}, task="lift the red cube")
            writer.save_episode()
    return root


def test_adding_a_bottleneck_trains_only_the_bottleneck(tmp_path):
    from vla.train.sft import _add_bottleneck, train

    base_dir = tmp_path / "base"
    make_state_policy(seed=0).save_pretrained(base_dir)
    dataset = write_state_dataset(tmp_path / "demos")

    # only vib.* is trainable, every other weight is the checkpoint's
    pcfg = PolicyConfig(type="state_flow", init=str(base_dir), vib_dim=4)
    policy = _add_bottleneck(pcfg)
    assert isinstance(policy, StateFlowPolicy) and policy.vib.latent_dim == 4
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("vib.") for n in trainable)
    assert trainable == {n for n, _ in policy.named_parameters() if n.startswith("vib.")}
    assert pcfg.vib_dim == 4 and pcfg.hidden_dim == 32  # the run's config records what was built

    cfg = TrainConfig(dataset=str(dataset), output_dir=str(tmp_path / "run"), steps=8, batch_size=4, lr=1e-2,
                      warmup_steps=1, log_every=4, save_every=0,
                      policy=PolicyConfig(type="state_flow", init=str(base_dir), vib_dim=4))
    final = train(cfg, progress=False)
    before, after = load_file(str(base_dir / WEIGHTS_FILE)), load_file(str(final / WEIGHTS_FILE))
    assert {k for k in after if not k.startswith("vib.")} == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert any(k.startswith("vib.") for k in after)
    fresh = StateFlowPolicy(PolicyConfig(**{**json.loads((final / "config.json").read_text()), "type": "state_flow"}))
    assert any(not torch.equal(after[k], fresh.state_dict()[k]) for k in after if k.startswith("vib."))  # it trained
    stats_before, stats_after = (load_file(str(d / STATS_FILE)) for d in (base_dir, final))
    assert stats_before.keys() == stats_after.keys()  # the checkpoint's normalisation, not the dataset's
    assert all(torch.equal(stats_before[k], stats_after[k]) for k in stats_before)
    loaded = load_policy(final)
    assert loaded.config.vib_dim == 4

    # a bottleneck is added once, to a state policy, with a size
    with pytest.raises(ConfigError, match="policy.vib_dim > 0"):
        _add_bottleneck(PolicyConfig(type="state_flow", init=str(base_dir), vib_dim=0))
    with pytest.raises(ConfigError, match="without a bottleneck"):
        _add_bottleneck(PolicyConfig(type="state_flow", init=str(final), vib_dim=4))

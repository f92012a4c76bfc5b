"""The state-based flow policy: checkpoint round trip, config validation, and that it learns."""

import json

import pytest
import torch

from tests.policy.helpers import make_batch, make_state_policy
from vla.policy.registry import load_policy
from vla.policy.config import PolicyConfig
from vla.policy.state_flow import StateFlowPolicy


@pytest.mark.parametrize("backbone", ["mlp", "unet"])
def test_checkpoint_round_trip_gives_the_same_actions(backbone, tmp_path):
    policy = make_state_policy(seed=3, backbone=backbone).eval()
    batch = make_batch(b=4)
    noise = torch.randn(4, 4, 7)
    before = policy.predict_action_chunk(batch, noise=noise)
    policy.save_pretrained(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "config.json").read_text())["type"] == "state_flow"
    loaded = load_policy(tmp_path / "p")
    assert isinstance(loaded, StateFlowPolicy) and loaded.config.backbone == backbone
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise), before)
    assert before.shape == (4, 4, 7)


def test_actions_depend_on_the_object_state():
    policy = make_state_policy(seed=0).eval()
    batch, noise = make_batch(b=2), torch.randn(2, 4, 7)
    moved = dict(batch, **{"observation.environment_state": batch["observation.environment_state"] + 1.0})
    assert not torch.allclose(policy.predict_action_chunk(batch, noise=noise),
                              policy.predict_action_chunk(moved, noise=noise))
    with pytest.raises(KeyError, match="observation.environment_state"):
        policy.predict_action_chunk({k: v for k, v in batch.items() if k != "observation.environment_state"})


@pytest.mark.parametrize("backbone", ["mlp", "unet"])
def test_flow_matching_fits_a_fixed_batch(backbone):
    policy = make_state_policy(seed=1, backbone=backbone).train()
    batch = make_batch(b=16, seed=2)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(150):
        loss, _ = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_config_is_validated_and_reads_no_cameras():
    assert PolicyConfig(type="state_flow").cameras == []
    with pytest.raises(ValueError, match="valid types: flow_vla, state_flow"):
        PolicyConfig(type="diffusion")
    with pytest.raises(ValueError, match="backbone"):
        StateFlowPolicy(PolicyConfig(type="state_flow", backbone="transformer"))
    with pytest.raises(ValueError, match="multiple of 4"):
        StateFlowPolicy(PolicyConfig(type="state_flow", backbone="unet", chunk_size=6, n_action_steps=2))

import json

import pytest
import torch

from tests.policy.helpers import make_batch, make_policy
from vla.policy.checkpoint import CONFIG_FILE, STATS_FILE, WEIGHTS_FILE, CheckpointError
from vla.policy.flow_vla import FlowVLAPolicy
from vla.policy.registry import load_policy


def test_round_trip_gives_identical_actions(tmp_path):
    policy = make_policy().eval()
    policy.normalizer.stat("action", "mean").fill_(0.5)  # non-trivial stats must travel too
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    batch, noise = make_batch(b=2), torch.randn(2, 4, 7)
    torch.testing.assert_close(policy.predict_action_chunk(batch, noise), loaded.predict_action_chunk(batch, noise),
                               rtol=0, atol=0)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, STATS_FILE])


def test_refuses_checkpoint_without_stats(tmp_path):
    make_policy().save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / STATS_FILE).unlink()
    with pytest.raises(CheckpointError, match="normalisation"):
        load_policy(tmp_path / "ckpt")


def test_refuses_to_save_without_stats(tmp_path):
    torch.manual_seed(0)
    from tests.policy.helpers import tiny_config

    with pytest.raises(CheckpointError):
        FlowVLAPolicy(tiny_config()).save_pretrained(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_refuses_truncated_weights(tmp_path):
    make_policy().save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_policy(tmp_path / "ckpt")


def test_refuses_shape_mismatch_and_names_the_tensor(tmp_path):
    make_policy().save_pretrained(tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    cfg["expert_mlp_dim"] = 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mlp.up_proj.weight"):
        load_policy(tmp_path / "ckpt")


def test_refuses_other_kinds_of_checkpoint(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / CONFIG_FILE).write_text(json.dumps({"type": "diffusion"}))
    with pytest.raises(CheckpointError, match="diffusion"):
        load_policy(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nothing")


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    policy = make_policy()
    policy.save_pretrained(tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / WEIGHTS_FILE).read_bytes()

    import vla.policy.checkpoint as ckpt

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        policy.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / WEIGHTS_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_registry_keys_are_the_classes_checkpoint_types():
    """save_policy writes policy.checkpoint_type; load_policy finds the class under that key."""
    from vla.policy.registry import POLICY_TYPES, policy_class

    for kind in POLICY_TYPES:
        assert policy_class(kind).checkpoint_type == kind

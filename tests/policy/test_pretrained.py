"""Loading published pi0 / pi0.5 checkpoints (lerobot and openpi layouts) into FlowVLAPolicy.

Parity: the fixtures hold lerobot 0.4.4's own action chunks for fixed inputs and noise
(scripts/make_lerobot_reference.py); our loaded policy must reproduce them in fp32.
"""

import json
import shutil

import pytest
import torch

from tests.policy.pretrained_helpers import (assert_training_losses_match, copy_fixture, edit_weights, fixture,
                                             load_reference, reference_batch, to_openpi_layout)
from vla.policy.checkpoint import CheckpointError
from vla.policy.flow_vla import FlowVLAPolicy
from vla.policy.registry import load_policy
from vla.policy.flow_vla.token_prompt import TokenizerMissing

# fp32 on CPU; measured max |diff| 5.4e-7 (pi0) / 9.5e-7 (pi0.5) on actions of magnitude ~4 (docs/PRETRAINED.md).
ACTION_ATOL = 1e-5
load = load_reference


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_actions_match_lerobot(kind):
    root = fixture(kind)
    policy = load(root)
    batch, ref = reference_batch(root)
    ids, mask = policy.language.tokenize(batch["task"], policy.normalized_state(batch))
    assert torch.equal(ids, ref["tokens"]) and torch.equal(mask, ref["token_mask"])
    actions = policy.predict_action_chunk(batch, noise=ref["noise"])
    assert actions.shape == ref["actions"].shape == (2, 5, 5)
    assert (actions - ref["actions"]).abs().max() < ACTION_ATOL
    # Different noise must give different actions (the comparison is not vacuous).
    other = policy.predict_action_chunk(batch, noise=ref["noise"] + 0.5)
    assert (other - ref["actions"]).abs().max() > 1e-2


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_training_velocity_matches_lerobot(kind):
    """lerobot's training forward (its joint layer, no KV cache) with fixed noise and time."""
    root = fixture(kind)
    assert_training_losses_match(load(root), *reference_batch(root))


def test_config_read_from_checkpoint():
    c = load(fixture("pi0")).config
    assert (c.cameras, c.state_dim, c.action_dim, c.max_state_dim, c.max_action_dim) == (["front", "wrist"], 6, 5, 8, 8)
    assert (c.chunk_size, c.n_action_steps, c.num_inference_steps, c.max_language_tokens) == (5, 3, 4, 16)
    assert (c.image_size, c.patch_size, c.width, c.expert_width, c.depth, c.head_dim) == (32, 8, 64, 32, 2, 16)
    assert c.time_conditioning == "mlp" and c.prompt_format == "pi0"
    c5 = load(fixture("pi05")).config
    assert c5.time_conditioning == "adarms" and c5.prompt_format == "pi05" and c5.normalization == "min_max"


def test_strict_load_names_missing_unexpected_and_misshaped(tmp_path):
    root = copy_fixture("pi0", tmp_path / "ck")
    w = root / "checkpoint" / "model.safetensors"

    def edit(weights):
        del weights["model.state_proj.bias"]
        weights["model.extra_head.weight"] = torch.zeros(3)
        weights["model.action_out_proj.bias"] = torch.zeros(9)

    edit_weights(w, edit)
    with pytest.raises(CheckpointError) as err:
        load(root)
    msg = str(err.value)
    assert "state_proj.bias" in msg and "model.extra_head.weight" in msg and "action_out_proj.bias" in msg
    assert "(9,)" in msg


def test_allow_partial_reports_what_stays_random(tmp_path, capsys):
    root = copy_fixture("pi0", tmp_path / "ck")
    edit_weights(root / "checkpoint" / "model.safetensors", lambda w: w.pop("model.state_proj.bias"))
    policy = load(root, allow_partial=True)
    out = capsys.readouterr().out
    assert "left at random init" in out and "state_proj.bias" in out
    assert not policy.state_proj.bias.is_meta
    batch, ref = reference_batch(root)
    assert policy.predict_action_chunk(batch, noise=ref["noise"]).isfinite().all()


@pytest.mark.parametrize("remove", ["stats_file", "processor_json"])
def test_missing_normalisation_stats_refused(tmp_path, remove):
    root = copy_fixture("pi0", tmp_path / "ck")
    ck = root / "checkpoint"
    if remove == "stats_file":
        for f in ck.glob("*normalizer_processor.safetensors"):
            f.unlink()
    else:
        (ck / "policy_preprocessor.json").unlink()
        (ck / "policy_postprocessor.json").unlink()
    with pytest.raises(CheckpointError, match="normalis"):
        load(root)


def test_truncated_weights_refused_before_compute(tmp_path, monkeypatch):
    root = copy_fixture("pi0", tmp_path / "ck")
    w = root / "checkpoint" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    built = []
    monkeypatch.setattr(FlowVLAPolicy, "__init__", lambda self, *a: built.append(1))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(root)
    assert not built


@pytest.mark.parametrize("kind,words", [("diffusion", "Diffusion Policy"), ("pi0fast", "pi0-FAST"),
                                        ("act", "ACT"), ("my_vla", "not a policy this project reads")])
def test_wrong_kind_of_checkpoint_refused(tmp_path, kind, words):
    root = copy_fixture("pi0", tmp_path / "ck")
    cfg = root / "checkpoint" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "type": kind}))
    with pytest.raises(CheckpointError, match=words):
        load(root)
    with pytest.raises(CheckpointError, match=words):  # the path every command uses
        load_policy(root / "checkpoint")


def test_missing_tokenizer_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("VLA_TOKENIZER_PATH", raising=False)
    with pytest.raises(TokenizerMissing, match="tokenizer"):
        load_policy(fixture("pi0") / "checkpoint")
    # A `tokenizer/` folder inside the checkpoint is found on its own.
    root = copy_fixture("pi0", tmp_path / "ck")
    shutil.copytree(root / "tokenizer", root / "checkpoint" / "tokenizer")
    assert load_policy(root / "checkpoint").config.language == "tokens"


def test_camera_mismatch_lists_both_sides():
    root = fixture("pi0")
    policy = load(root)
    batch, _ = reference_batch(root)
    batch["observation.images.agentview"] = batch.pop("observation.images.front")
    with pytest.raises(KeyError) as err:
        policy.predict_action_chunk(batch)
    assert "front" in str(err.value) and "agentview" in str(err.value)


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_save_in_our_format_and_reload(tmp_path, kind):
    root = fixture(kind)
    policy = load(root)
    policy.save_pretrained(tmp_path / "ours")
    assert (tmp_path / "ours" / "tokenizer" / "tokenizer.json").is_file()
    again = load_policy(tmp_path / "ours")
    batch, ref = reference_batch(root)
    assert torch.equal(again.predict_action_chunk(batch, noise=ref["noise"]),
                       policy.predict_action_chunk(batch, noise=ref["noise"]))


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_openpi_layout(tmp_path, kind):
    root = fixture(kind)
    openpi = to_openpi_layout(root / "checkpoint", tmp_path / "openpi")
    policy = load_policy(openpi, tokenizer_path=str(root / "tokenizer"), state_dim=6, action_dim=5,
                             cameras=["front", "wrist"], chunk_size=5)
    c = policy.config
    assert c.prompt_format == kind and c.max_language_tokens == (200 if kind == "pi05" else 48)
    assert c.prompt_state_unpadded == (kind == "pi05")  # openpi tokenizes pi0.5's state before padding it
    # Compare with the lerobot-loaded policy under lerobot's prompt length, pad value and padded prompt state.
    c.max_language_tokens = policy.language.max_tokens = 40 if kind == "pi05" else 16
    c.image_pad_value, c.num_inference_steps, c.prompt_state_unpadded = -3.0, 4, False
    batch, ref = reference_batch(root)
    assert (policy.predict_action_chunk(batch, noise=ref["noise"]) - ref["actions"]).abs().max() < 1e-4
    (next(openpi.glob("assets/*/norm_stats.json"))).unlink()
    with pytest.raises(CheckpointError, match="norm_stats"):
        load_policy(openpi, tokenizer_path=str(root / "tokenizer"), chunk_size=5)


def test_bf16_load_is_close():
    root = fixture("pi0")
    policy = load(root, dtype="bfloat16")
    assert policy.action_in_proj.weight.dtype == torch.bfloat16
    batch, ref = reference_batch(root)
    assert (policy.predict_action_chunk(batch, noise=ref["noise"]) - ref["actions"]).abs().max() < 0.3


@pytest.mark.parametrize("preset", ["pi0", "pi05"])
def test_published_sizes_round_trip_through_the_name_mapping(preset):
    """Full-size pi0 / pi0.5 (built on the meta device, no memory): every parameter maps to a published
    name and back, and the sizes read from those shapes are the preset's."""
    from vla.policy.config import PolicyConfig
    from vla.policy.foreign.pi0_names import to_lerobot, to_ours
    from vla.policy.foreign.pretrained import sizes_from_shapes

    cfg = PolicyConfig(preset=preset, language="tokens", vocab_size=257152, max_state_dim=32, max_action_dim=32,
                       prompt_format=preset)
    with torch.device("meta"):
        policy = FlowVLAPolicy(cfg)
    shapes = {to_lerobot(n): tuple(p.shape) for n, p in policy.named_parameters()}
    assert all(to_ours(k, preset) == n for k, n in zip(shapes, dict(policy.named_parameters())))
    sizes = sizes_from_shapes(shapes)
    for key in ("image_size", "patch_size", "vision_width", "vision_layers", "vision_heads", "vision_mlp_dim", "width",
                "mlp_dim", "depth", "num_heads", "num_kv_heads", "head_dim", "expert_width", "expert_mlp_dim"):
        assert sizes[key] == getattr(cfg, key), key
    n = sum(p.numel() for p in policy.parameters())
    assert 3.0e9 < n < 3.6e9  # pi0: ~3.3B with the token table


def test_empty_camera_slots_are_masked_out(tmp_path):
    """lerobot's `empty_cameras`: extra slots filled with a black image that no token attends to."""
    root = copy_fixture("pi0", tmp_path / "ck")
    cfg = root / "checkpoint" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "empty_cameras": 1}))
    policy = load(root)
    assert policy.config.cameras == ["front", "wrist", "empty_camera_0"]
    batch, ref = reference_batch(root)
    assert (policy.predict_action_chunk(batch, noise=ref["noise"]) - ref["actions"]).abs().max() < ACTION_ATOL

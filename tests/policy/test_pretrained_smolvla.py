"""Loading lerobot SmolVLA checkpoints into SmolVLAPolicy.

Parity: tests/policy/fixtures/lerobot_smolvla holds lerobot 0.4.4's own checkpoint, inputs and
outputs (scripts/make_lerobot_smolvla_reference.py); the loaded policy must reproduce them in fp32.
"""

import json

import pytest
import torch

from tests.policy.pretrained_helpers import (assert_training_losses_match, copy_fixture, edit_weights, fixture,
                                             load_for_finetuning, load_reference, reference_batch)
from vla.policy.checkpoint import CheckpointError
from vla.policy.registry import load_policy
from vla.policy.smolvla.policy import SmolVLAPolicy, patch_position_ids, resize_with_pad_top_left

# fp32 on CPU; measured max |diff| 9.5e-7 on actions of magnitude ~6 (docs/PRETRAINED.md).
ACTION_ATOL = 1e-5
load = load_reference


@pytest.fixture(scope="module")
def policy():
    return load(fixture("smolvla"))


def test_actions_match_lerobot(policy):
    batch, ref = reference_batch(fixture("smolvla"))
    ids, mask = policy.language.tokenize(batch["task"])
    n = ref["tokens"].shape[1]  # lerobot pads to the longest prompt, we to the prompt length: same tokens
    assert torch.equal(ids[:, :n], ref["tokens"]) and torch.equal(mask[:, :n], ref["token_mask"])
    assert not mask[:, n:].any()
    actions = policy.predict_action_chunk(batch, noise=ref["noise"])
    assert actions.shape == ref["actions"].shape == (2, 5, 5)
    assert (actions - ref["actions"]).abs().max() < ACTION_ATOL
    other = policy.predict_action_chunk(batch, noise=ref["noise"] + 0.5)
    assert (other - ref["actions"]).abs().max() > 1e-2  # the comparison is not vacuous


def test_training_velocity_matches_lerobot(policy):
    """lerobot's training forward (prefix and suffix in one pass, no KV cache) with fixed noise and time."""
    assert_training_losses_match(policy, *reference_batch(fixture("smolvla")))


def test_config_read_from_checkpoint(policy):
    c = policy.config
    assert isinstance(policy, SmolVLAPolicy)
    assert (c.cameras, c.state_dim, c.action_dim, c.max_state_dim, c.max_action_dim) == (["front", "wrist"], 6, 5, 8, 8)
    assert (c.chunk_size, c.n_action_steps, c.num_inference_steps, c.max_language_tokens) == (5, 3, 4, 12)
    assert (c.image_size, c.patch_size, c.scale_factor, c.vision_width, c.vision_heads) == (32, 8, 2, 64, 1)
    assert (c.width, c.num_heads, c.num_kv_heads, c.head_dim, c.depth) == (128, 2, 1, 64, 2)
    assert (c.expert_width, c.expert_mlp_dim, c.self_attn_every_n_layers) == (96, 64, 2)
    assert policy.transformer.cross == [False, True]  # layer 0 self-attention, layer 1 cross-attention
    assert policy.transformer.expert.layers[1].self_attn.k_proj.in_features == 64  # projects the prefix's kv
    assert c.normalization == "mean_std" and c.normalization_eps == 1e-8


def test_vision_positions_and_padding_follow_the_reference():
    # transformers 4.5x's bucketing: every patch row / column after the first lands one bucket early.
    assert patch_position_ids(4, "cpu").view(4, 4)[:, 0].tolist() == [0, 0, 4, 8]
    img = torch.rand(1, 3, 16, 32)
    out = resize_with_pad_top_left(img, 32)
    assert out.shape == (1, 3, 32, 32)
    assert out[..., :16, :].abs().max() == 0 and out[..., 16:, :].min() > 0  # padded on top, image at the bottom


def test_strict_load_names_missing_unexpected_and_misshaped(tmp_path):
    root = copy_fixture("smolvla", tmp_path / "ck")

    def edit(weights):
        del weights["model.vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight"]
        weights["model.vlm_with_expert.extra.weight"] = torch.zeros(3)
        weights["model.action_out_proj.bias"] = torch.zeros(9)

    edit_weights(root / "checkpoint" / "model.safetensors", edit)
    with pytest.raises(CheckpointError) as err:
        load(root)
    msg = str(err.value)
    assert "transformer.expert.layers.1.self_attn.k_proj.weight" in msg and "model.vlm_with_expert.extra.weight" in msg
    assert "action_out_proj.bias" in msg and "(9,)" in msg


def test_allow_partial_reports_what_stays_random(tmp_path, capsys):
    root = copy_fixture("smolvla", tmp_path / "ck")
    edit_weights(root / "checkpoint" / "model.safetensors",
                 lambda w: w.pop("model.vlm_with_expert.lm_expert.layers.1.mlp.up_proj.weight"))
    policy = load(root, allow_partial=True)
    assert "transformer.expert.layers.1.mlp.up_proj.weight" in capsys.readouterr().out
    batch, ref = reference_batch(root)
    assert policy.predict_action_chunk(batch, noise=ref["noise"]).isfinite().all()


def test_missing_stats_and_unsupported_options_refuse(tmp_path):
    root = copy_fixture("smolvla", tmp_path / "ck")
    for f in (root / "checkpoint").glob("*normalizer_processor.safetensors"):
        f.unlink()
    with pytest.raises(CheckpointError, match="normalisation stat"):
        load(root)
    root = copy_fixture("smolvla", tmp_path / "ck2")
    path = root / "checkpoint" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "add_image_special_tokens": True}))
    with pytest.raises(CheckpointError, match="add_image_special_tokens"):
        load(root)


def test_truncated_weights_refused(tmp_path):
    root = copy_fixture("smolvla", tmp_path / "ck")
    w = root / "checkpoint" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(root)


def test_save_and_reload_round_trip(tmp_path, policy):
    batch, ref = reference_batch(fixture("smolvla"))
    policy.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["type"] == "flow_vla_smolvla"
    assert (tmp_path / "saved" / "tokenizer" / "tokenizer.json").is_file()
    again = load_policy(tmp_path / "saved")  # the entry point `vla eval / rl` use
    assert isinstance(again, SmolVLAPolicy)
    assert torch.equal(again.predict_action_chunk(batch, noise=ref["noise"]),
                       policy.predict_action_chunk(batch, noise=ref["noise"]))


def _loss_and_grads(**options):
    policy, batch, ref = load_for_finetuning("smolvla", **options)
    loss, _ = policy(batch, noise=ref["noise"], time=torch.tensor([0.3, 0.7]))
    loss.backward()
    return policy, loss, {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}


def test_finetune_options_apply_to_smolvla():
    policy, loss, g = _loss_and_grads(train_expert_only=True)
    frozen = ("vision.", "multi_modal_projector.", "transformer.vlm.", "language.")
    assert all(not p.requires_grad for n, p in policy.named_parameters() if n.startswith(frozen))
    assert g["transformer.expert.layers.1.self_attn.v_proj.weight"].abs().sum() > 0
    assert g["state_proj.weight"].abs().sum() > 0  # the state token is in the prefix but not frozen
    _, loss_ckpt, g_ckpt = _loss_and_grads(train_expert_only=True, gradient_checkpointing=True)
    assert torch.allclose(loss, loss_ckpt) and g.keys() == g_ckpt.keys()
    assert all(torch.allclose(g[n], g_ckpt[n], atol=1e-6, rtol=1e-4) for n in g)
    policy, loss, g = _loss_and_grads(dtype="bfloat16")
    assert policy.transformer.vlm.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in g.values())


def test_pi0_weights_labelled_smolvla_refused(tmp_path):
    root = copy_fixture("pi0", tmp_path / "ck")
    cfg = root / "checkpoint" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "type": "smolvla", "resize_imgs_with_padding": [32, 32]}))
    with pytest.raises(CheckpointError, match="tensors that define a SmolVLA model"):
        load(root)

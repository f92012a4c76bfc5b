"""Parity with openpi's own PyTorch pi0 / pi0.5, independent of lerobot and of scripts/lerobot_openpi_shim.py.

tests/policy/fixtures/openpi_{pi0,pi05}_reference were written by openpi's models_pytorch code on its
transformers_replace fork (scripts/make_openpi_pi0_fixture.py; the fixture's README.md has the openpi
commit, versions and command): a tiny checkpoint in openpi's layout, fixed inputs and noise, openpi's
tokens and sampled actions. Nothing of openpi is imported here.

What the comparison pinned (docs/PRETRAINED.md, "openpi reference"): image tokens are not divided by
sqrt(width); pi0 prompts are cleaned (stripped, "_" and newlines to spaces); pi0.5 puts the unpadded
state into the prompt. What is left is openpi's Euler time, accumulated in float32 (1, 0.9, 0.8000001,
...) where ours is 1 - k/K: replayed on openpi's time grid our chain matches to ~1e-6.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vla.policy.registry import load_policy

FIXTURES = Path(__file__).parent / "fixtures"
# fp32 on CPU, our own Euler times: measured max |diff| 6.0e-5 (pi0) and 3.4e-5 (pi0.5) on actions up to
# ~6-8; all of it is the time grid (see test_chain_matches_on_openpis_time_grid).
ACTION_ATOL = 2e-4
# On openpi's time grid: measured 9.5e-7 (pi0) and 1.4e-6 (pi0.5), normalised, all 32 dims.
GRID_ATOL = 1e-5


def reference(kind: str):
    root = FIXTURES / f"openpi_{kind}_reference"
    policy = load_policy(root / "checkpoint", tokenizer_path=str(root / "tokenizer"))
    ref = load_file(str(root / "reference.safetensors"))
    batch = {"observation.images." + k[len("image."):]: v for k, v in ref.items() if k.startswith("image.")}
    batch["observation.state"] = ref["state"]
    batch["task"] = json.loads((root / "provenance.json").read_text())["tasks"]
    return policy, batch, ref


def prompt_tokens(policy, batch):
    state = policy.normalized_state(batch)
    if policy.config.prompt_state_unpadded:
        state = state[:, :policy.config.state_dim]
    return policy.language.tokenize(batch["task"], state)


def max_diff(policy, batch, ref) -> float:
    return (policy.predict_action_chunk(batch, noise=ref["noise"]) - ref["actions"]).abs().max().item()


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_actions_match_openpi(kind):
    policy, batch, ref = reference(kind)
    c = policy.config
    assert (c.prompt_format, c.chunk_size, c.num_inference_steps, c.cameras) == (
        kind, 50, 10, ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"])
    assert not c.image_feature_scale
    assert (c.prompt_clean, c.prompt_state_unpadded) == (kind == "pi0", kind == "pi05")
    ids, mask = prompt_tokens(policy, batch)
    assert torch.equal(ids, ref["tokens"]) and torch.equal(mask, ref["token_mask"])
    actions = policy.predict_action_chunk(batch, noise=ref["noise"])
    assert actions.shape == ref["actions"].shape == (2, 50, 5)
    assert (actions - ref["actions"]).abs().max() < ACTION_ATOL
    # Not vacuous: other noise moves the actions far past the tolerance.
    assert max_diff(policy, batch, {**ref, "noise": ref["noise"] + 0.5}) > 1e-2


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_chain_matches_on_openpis_time_grid(kind):
    """openpi's loop: dt = -1/K and time += dt in float32, x += dt * v; all 32 normalised dims."""
    policy, batch, ref = reference(kind)
    with torch.no_grad():
        cache, state_token = policy.encode_observation(batch)
        x, dt, time = ref["noise"].clone(), torch.tensor(-1.0 / 10), torch.tensor(1.0)
        steps = 0
        while time >= -dt / 2:
            x = x + dt * policy.velocity(cache, state_token, x, time.expand(x.shape[0]))
            time, steps = time + dt, steps + 1
    assert steps == 10 and x.shape == ref["raw_actions"].shape == (2, 50, 32)
    assert (x - ref["raw_actions"]).abs().max() < GRID_ATOL


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_stock_paligemma_image_scale_misses_openpi(kind):
    """Dividing image tokens by sqrt(width), as stock transformers' PaliGemma does (the old behaviour):
    measured max |diff| 0.65 (pi0) / 0.97 (pi0.5)."""
    policy, batch, ref = reference(kind)
    policy.config.image_feature_scale = True
    assert max_diff(policy, batch, ref) > 20 * ACTION_ATOL


def test_uncleaned_pi0_prompt_misses_openpi():
    """The second task is "  lift_the block": openpi tokenizes "lift the block". Measured max |diff| 0.10."""
    policy, batch, ref = reference("pi0")
    policy.language.clean = False
    ids, _ = prompt_tokens(policy, batch)
    assert torch.equal(ids[0], ref["tokens"][0]) and not torch.equal(ids[1], ref["tokens"][1])
    assert max_diff(policy, batch, ref) > 20 * ACTION_ATOL


def test_padded_state_in_pi05_prompt_misses_openpi():
    """lerobot discretises the state padded to 32 into the prompt; openpi tokenizes before padding.
    Measured max |diff| 0.29."""
    policy, batch, ref = reference("pi05")
    policy.config.prompt_state_unpadded = False
    assert max_diff(policy, batch, ref) > 20 * ACTION_ATOL

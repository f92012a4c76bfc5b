"""lerobot 0.4.x processor files for an exported policy (the writing side of lerobot_metadata.py).

A lerobot checkpoint normalises outside the model: policy_preprocessor.json lists the input steps
(renaming, batching, the prompt's newline, tokenizer, device, normaliser), policy_postprocessor.json
the output ones (unnormaliser, device); each normaliser step keeps its statistics in
`<pipeline>_step_<i>_<registry name>.safetensors` (lerobot's DataProcessorPipeline.save_pretrained
naming), keys `<feature>.<stat>`. The steps and their configs are the ones lerobot's own
make_{pi0,pi05,smolvla}_pre_post_processors build, in the same order (tests/policy/test_lerobot_export.py
compares them with fixtures lerobot 0.4.4 wrote).

Our normaliser is converted exactly to lerobot's formulas (processor/normalize_processor.py), which
place eps differently from ours (vla/policy/normalize.py):
- MEAN_STD: lerobot normalises (x - mean) / (std + eps) but unnormalises x * std + mean. Writing
  std + eps_ours as the std and eps 0 gives our two maps exactly, in both directions.
- MIN_MAX / QUANTILES: lerobot computes 2 (x - lo) / (hi - lo) - 1 (eps only replaces a zero range).
  Writing hi + eps_ours as the top gives our 2 (x - lo) / (hi - lo + eps) - 1 to float rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from vla.policy.foreign.lerobot_metadata import (ACTION, IMAGES, NORMALIZER, POSTPROCESSOR, PREPROCESSOR, STATE,
                                                 UNNORMALIZER)

# The tokenizer lerobot's pi0 / pi0.5 processors load by name (SmolVLA's is its vlm_model_name).
PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"


def lerobot_modes(mode: str, kind: str) -> dict[str, str]:
    """config.json's normalization_mapping for our one mode. A range mode is QUANTILES for pi0.5
    (lerobot's and openpi's default there, so a lerobot fine-tune from the export keeps it), MIN_MAX
    otherwise; the statistics written under either name are ours."""
    feature_mode = "MEAN_STD" if mode == "mean_std" else ("QUANTILES" if kind == "pi05" else "MIN_MAX")
    return {"VISUAL": "IDENTITY", "STATE": feature_mode, "ACTION": feature_mode}


def lerobot_stats(normalizer, modes: dict[str, str]) -> dict[str, torch.Tensor]:
    """The normaliser's statistics as lerobot's flat `<feature>.<stat>` tensors, eps folded in (module
    docstring): lerobot's formulas with eps 0 compute what ours compute."""
    eps, flat = normalizer.eps, {}
    for feature in (STATE, ACTION):
        mode = modes["STATE" if feature == STATE else "ACTION"]
        if mode == "MEAN_STD":
            flat[f"{feature}.mean"] = normalizer.stat(feature, "mean")
            flat[f"{feature}.std"] = normalizer.stat(feature, "std") + eps
        else:
            lo, hi = ("min", "max") if mode == "MIN_MAX" else ("q01", "q99")
            flat[f"{feature}.{lo}"] = normalizer.stat(feature, "min")
            flat[f"{feature}.{hi}"] = normalizer.stat(feature, "max") + eps
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in flat.items()}


def _normalizer_step(registry: str, features: dict, modes: dict, state_file: str) -> dict:
    return {"registry_name": registry, "config": {"eps": 0.0, "features": features, "norm_map": modes},
            "state_file": state_file}


def state_file(pipeline: str, index: int, registry: str) -> str:
    return f"{pipeline}_step_{index}_{registry}.safetensors"


def preprocessor_steps(kind: str, features: dict, modes: dict, max_tokens: int, tokenizer_name: str,
                       max_state_dim: int = 32) -> list[dict]:
    """policy_preprocessor.json's steps for kind (pi0, pi05, smolvla), as lerobot's factories order them.

    One deliberate difference from lerobot 0.4.4's own save_pretrained: pi0.5's state-prompt step is
    written with its max_state_dim. lerobot saves that step's config as {}, so its from_pretrained
    rebuilds it with the default 32 and pads the prompt's state to 32 bins whatever the policy's
    max_state_dim (the step lerobot trained with used config.max_state_dim); the step accepts the field."""
    padding = "longest" if kind == "smolvla" else "max_length"  # SmolVLA's pad_language_to default
    tokenizer = {"registry_name": "tokenizer_processor",
                 "config": {"max_length": max_tokens, "task_key": "task", "padding_side": "right", "padding": padding,
                            "truncation": True, "tokenizer_name": tokenizer_name}}
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    head = [{"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}}]
    if kind == "pi05":  # normalise first: the prompt carries the discretised normalised state
        norm = _normalizer_step(NORMALIZER, features, modes, state_file(PREPROCESSOR, 2, NORMALIZER))
        return head + [norm, {"registry_name": "pi05_prepare_state_tokenizer_processor_step",
                               "config": {"max_state_dim": max_state_dim}},
                       tokenizer, device]
    newline = {"registry_name": f"{'smolvla' if kind == 'smolvla' else 'pi0'}_new_line_processor", "config": {}}
    norm = _normalizer_step(NORMALIZER, features, modes, state_file(PREPROCESSOR, 5, NORMALIZER))
    return head + [newline, tokenizer, device, norm]


def write_processors(directory: Path, kind: str, features: dict, modes: dict, stats: dict[str, torch.Tensor],
                     max_tokens: int, tokenizer_name: str, max_state_dim: int = 32) -> None:
    """Both pipeline files and their statistics into directory; features are config.json's input and
    output features together (the normaliser lists them all, the unnormaliser the action)."""
    pre = preprocessor_steps(kind, features, modes, max_tokens, tokenizer_name, max_state_dim)
    post = [_normalizer_step(UNNORMALIZER, {ACTION: features[ACTION]}, modes, state_file(POSTPROCESSOR, 0, UNNORMALIZER)),
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}]
    for name, steps in ((PREPROCESSOR, pre), (POSTPROCESSOR, post)):
        for step in steps:
            if "state_file" in step:
                save_file(stats, str(directory / step["state_file"]))
        (directory / f"{name}.json").write_text(json.dumps({"name": name, "steps": steps}, indent=2))


def lerobot_features(cameras: list[str], image_size: int, state_dim: int, action_dim: int) -> tuple[dict, dict, int]:
    """(input_features, output_features, empty_cameras) for config.json. Our `empty_camera_<i>` slots
    (read from a lerobot checkpoint's empty_cameras) go back to that count; camera shapes are the
    square the policy resizes to (lerobot resizes any camera to image_resolution the same way)."""
    from vla.policy.flow_vla.policy import EMPTY_CAMERA

    real = [c for c in cameras if not c.startswith(EMPTY_CAMERA)]
    empty = [c for c in cameras if c.startswith(EMPTY_CAMERA)]
    inputs = {f"{IMAGES}{c}": {"type": "VISUAL", "shape": [3, image_size, image_size]} for c in real}
    inputs[STATE] = {"type": "STATE", "shape": [state_dim]}
    return inputs, {ACTION: {"type": "ACTION", "shape": [action_dim]}}, len(empty)

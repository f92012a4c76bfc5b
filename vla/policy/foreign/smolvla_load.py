"""Load a lerobot SmolVLA checkpoint (config.json type "smolvla") from a local directory.

Sizes come from the tensor shapes (smolvla_names.py), everything else from the
checkpoint's own files: cameras, dims, chunking, steps, image size, max state / action dims and
the time embedding periods from config.json; the prompt length and the normalisation (mode,
statistics, eps) from the processor files. Options that change the computation in ways this
policy does not implement are refused by name rather than silently ignored. The metadata readers
(lerobot_metadata.py) and the strict weight loading (weights.py) are pi0's.
"""

from __future__ import annotations

import json
from pathlib import Path

from vla.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from vla.policy.foreign.lerobot_metadata import lerobot_features, lerobot_normalization, prompt_length
from vla.policy.foreign.smolvla_names import sizes_from_shapes, to_ours
from vla.policy.foreign.weight_names import map_names
from vla.policy.foreign.weights import build_policy
from vla.policy.smolvla.config import SmolVLAConfig
from vla.policy.smolvla.policy import SmolVLAPolicy

# config.json options whose non-default values this policy does not reproduce.
_UNSUPPORTED = {"add_image_special_tokens": False, "adapt_to_pi_aloha": False,
                "use_delta_joint_actions_aloha": False}


def smolvla_config(directory: Path, shapes: dict, tokenizer_path: str) -> tuple[SmolVLAConfig, dict]:
    raw = json.loads((directory / CONFIG_FILE).read_text())
    for key, default in _UNSUPPORTED.items():
        if raw.get(key, default) != default:
            raise CheckpointError(f"{directory / CONFIG_FILE}: {key}={raw[key]!r} is not supported by this loader")
    cameras, state_dim, action_dim = lerobot_features(directory, raw)
    mode, our_stats, eps = lerobot_normalization(directory, raw, state_dim, action_dim)
    sizes = sizes_from_shapes(shapes)
    resize = raw.get("resize_imgs_with_padding")
    if resize is None or list(resize) != [sizes["image_size"]] * 2:
        raise CheckpointError(f"{directory}: resize_imgs_with_padding {resize} does not match the vision tower "
                              f"({sizes['image_size']} px square)")
    for key in ("max_state_dim", "max_action_dim"):
        if key in raw and int(raw[key]) != sizes[key]:
            raise CheckpointError(f"{directory}: config {key} {raw[key]} but the weights are {sizes[key]} wide")
    cross = "cross" in raw.get("attention_mode", "cross_attn")
    config = SmolVLAConfig(
        state_dim=state_dim, action_dim=action_dim, cameras=cameras,
        chunk_size=int(raw.get("chunk_size", 50)), n_action_steps=int(raw.get("n_action_steps", 50)),
        num_inference_steps=int(raw.get("num_steps", 10)), time_conditioning="mlp",
        max_language_tokens=prompt_length(directory, raw), normalization=mode, normalization_eps=eps,
        language="tokens", tokenizer_path=tokenizer_path, prompt_format="pi0", image_resize="pad",
        self_attn_every_n_layers=int(raw.get("self_attn_every_n_layers", 2)) if cross else 1,
        time_min_period=float(raw.get("min_period", 4e-3)), time_max_period=float(raw.get("max_period", 4.0)),
        vlm_model_name=raw.get("vlm_model_name", SmolVLAConfig.vlm_model_name), **sizes,
    )
    return config, our_stats


def load_lerobot_smolvla(directory: Path, shapes: dict, tokenizer_path: str, allow_partial: bool, dtype: str):
    """A SmolVLAPolicy from the checkpoint in directory, whose weights' header (names, shapes) is given."""
    config, stats = smolvla_config(directory, shapes, tokenizer_path)
    mapping, unexpected = map_names(shapes, to_ours)
    return build_policy(SmolVLAPolicy, config, stats, directory / WEIGHTS_FILE, mapping, unexpected, allow_partial,
                        dtype)

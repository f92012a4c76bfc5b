"""Load a lerobot SmolVLA checkpoint (config.json type "smolvla") from a local directory.

Sizes come from the tensor shapes (vla/policy/smolvla_names.py), everything else from the
checkpoint's own files: cameras, dims, chunking, steps, image size, max state / action dims and
the time embedding periods from config.json; the prompt length and the normalisation (mode,
statistics, eps) from the processor files. Options that change the computation in ways this
policy does not implement are refused by name rather than silently ignored. Loading is strict,
through the same weight copier as pi0 (vla/policy/pretrained.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vla.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from vla.policy.smolvla_config import SmolVLAConfig
from vla.policy.smolvla_names import sizes_from_shapes, to_ours

ACTION, STATE = "action", "observation.state"
# config.json options whose non-default values this policy does not reproduce.
_UNSUPPORTED = {"add_image_special_tokens": False, "adapt_to_pi_aloha": False,
                "use_delta_joint_actions_aloha": False}


def smolvla_config(directory: Path, shapes: dict, tokenizer_path: str) -> tuple[SmolVLAConfig, dict]:
    from vla.policy.pretrained import _lerobot_stats, _normalization, _tokenizer_step

    raw = json.loads((directory / CONFIG_FILE).read_text())
    for key, default in _UNSUPPORTED.items():
        if raw.get(key, default) != default:
            raise CheckpointError(f"{directory / CONFIG_FILE}: {key}={raw[key]!r} is not supported by this loader")
    features = raw.get("input_features", {})
    if STATE not in features or ACTION not in raw.get("output_features", {}):
        raise CheckpointError(f"{directory / CONFIG_FILE}: input_features needs {STATE!r} and output_features {ACTION!r}")
    cameras = [k[len("observation.images."):] for k, v in features.items() if v.get("type") == "VISUAL"]
    cameras += [f"empty_camera_{i}" for i in range(int(raw.get("empty_cameras", 0)))
                if f"observation.images.empty_camera_{i}" not in features]
    state_dim = int(features[STATE]["shape"][0])
    action_dim = int(raw["output_features"][ACTION]["shape"][0])
    stats, norm_step = _lerobot_stats(directory)
    if not stats:
        raise CheckpointError(f"{directory}: no normalisation statistics (policy_preprocessor.json with a "
                              "normalizer_processor step and its safetensors); a policy never runs un-normalised")
    mode, our_stats = _normalization(raw.get("normalization_mapping", {}), stats, directory, state_dim, action_dim)
    sizes = sizes_from_shapes(shapes)
    resize = raw.get("resize_imgs_with_padding")
    if resize is None or list(resize) != [sizes["image_size"]] * 2:
        raise CheckpointError(f"{directory}: resize_imgs_with_padding {resize} does not match the vision tower "
                              f"({sizes['image_size']} px square)")
    for key in ("max_state_dim", "max_action_dim"):
        if key in raw and int(raw[key]) != sizes[key]:
            raise CheckpointError(f"{directory}: config {key} {raw[key]} but the weights are {sizes[key]} wide")
    cross = "cross" in raw.get("attention_mode", "cross_attn")
    tok = _tokenizer_step(directory)
    config = SmolVLAConfig(
        state_dim=state_dim, action_dim=action_dim, cameras=cameras,
        chunk_size=int(raw.get("chunk_size", 50)), n_action_steps=int(raw.get("n_action_steps", 50)),
        num_inference_steps=int(raw.get("num_steps", 10)), time_conditioning="mlp",
        max_language_tokens=int(tok.get("max_length", raw.get("tokenizer_max_length", 48))),
        normalization=mode, normalization_eps=float(norm_step.get("eps", 1e-8)), language="tokens",
        tokenizer_path=tokenizer_path, prompt_format="pi0", image_resize="pad",
        self_attn_every_n_layers=int(raw.get("self_attn_every_n_layers", 2)) if cross else 1,
        time_min_period=float(raw.get("min_period", 4e-3)), time_max_period=float(raw.get("max_period", 4.0)),
        **sizes,
    )
    return config, our_stats


def map_weights(shapes: dict) -> tuple[dict[str, str], list[str]]:
    """{published name: our name} and the published names that belong to no part of SmolVLA."""
    mapping, unexpected = {}, []
    for key in shapes:
        try:
            ours = to_ours(key)
        except KeyError:
            unexpected.append(key)
            continue
        if ours is not None:
            mapping[key] = ours
    return mapping, sorted(unexpected)


def load_lerobot_smolvla(directory: Path, tokenizer_path: str, allow_partial: bool, dtype: str):
    from vla.policy.pretrained import _weights_header, load_weights
    from vla.policy.smolvla import SmolVLAPolicy

    weights = directory / WEIGHTS_FILE
    shapes = _weights_header(weights)
    config, stats = smolvla_config(directory, shapes, tokenizer_path)
    config.dtype = dtype
    torch_dtype = getattr(torch, dtype)
    mapping, unexpected = map_weights(shapes)
    if allow_partial:
        policy = SmolVLAPolicy(config).to(torch_dtype)  # what the checkpoint lacks keeps a real random init
    else:
        with torch.device("meta"):  # a 450M model is never materialised twice (random init, then weights)
            policy = SmolVLAPolicy(config)
    load_weights(policy, weights, mapping, unexpected, allow_partial, torch_dtype)
    policy.materialize_buffers()
    policy.normalizer.load_stats(stats)
    return policy.eval()

"""config.json of a lerobot 0.4.x pi0 / pi05 / smolvla checkpoint from one of our policy configs,
and the reasons a policy cannot be written as one (vla/policy/foreign/lerobot_export.py writes it).

Only fields lerobot's config classes declare are written (draccus refuses unknown ones); the rest
keep lerobot's defaults. What our loaders read back (pretrained.py, smolvla_load.py) comes from the
same fields, so ours -> lerobot -> ours rebuilds the same config.
"""

from __future__ import annotations

from vla.policy.checkpoint import CheckpointError
from vla.policy.flow_vla.policy import EMPTY_CAMERA
from vla.policy.foreign.lerobot_processors import lerobot_features, lerobot_modes

# lerobot builds pi0 / pi0.5 from named sizes only: Gemma 2B + 300M (modeling_pi0.get_gemma_config)
# and PaliGemma's SigLIP So400m/14 with a 257152-token table (PaliGemmaWithExpertModel).
PI0_STOCK = dict(vision_width=1152, vision_layers=27, vision_heads=16, vision_mlp_dim=4304, patch_size=14, width=2048,
                 mlp_dim=16384, depth=18, num_heads=8, num_kv_heads=1, head_dim=256, expert_width=1024,
                 expert_mlp_dim=4096, vocab_size=257152)
CUSTOM_SIZES_HINT = ("lerobot would build its stock model and fail to load these weights "
                     "(--custom_sizes=true writes them anyway, for a lerobot whose sizes are patched)")


def pi0_kind(c, custom_sizes: bool) -> str:
    """'pi0' or 'pi05' for a FlowVLAPolicy config lerobot computes the same way; CheckpointError naming
    the first field that differs otherwise."""
    if c.language != "tokens":
        raise CheckpointError(f"language {c.language!r}: lerobot's pi0 embeds the prompt with PaliGemma's token "
                              "table (language 'tokens'); a MiniLM-encoded policy has no lerobot equivalent")
    if c.latent_reasoning:
        raise CheckpointError("latent_reasoning: lerobot's pi0 has no latent-reasoning tokens")
    if c.vib_dim:
        raise CheckpointError("vib_dim: lerobot's pi0 has no bottleneck token (export the policy the bottleneck "
                              "was added to, policy.init)")
    kinds = {("pi0", "mlp"): "pi0", ("pi05", "adarms"): "pi05"}
    kind = kinds.get((c.prompt_format, c.time_conditioning))
    if kind is None:
        raise CheckpointError(f"prompt_format {c.prompt_format!r} with time_conditioning {c.time_conditioning!r}: "
                              "lerobot has pi0 ('pi0' + 'mlp') and pi0.5 ('pi05' + 'adarms') only")
    # lerobot 0.4.4 resizes with padding, pads its [0, 1] images with -1 (-3 after scaling, see
    # flow_vla/policy.py resize_with_pad), on the transformers fork it requires leaves image tokens
    # unscaled (stock PaliGemma divides them by sqrt(width); docs/PRETRAINED.md), tokenizes pi0 tasks
    # as given and pads pi0.5's prompt state to max_state_dim (openpi does neither).
    for field, want in (("image_resize", "pad"), ("image_pad_value", -3.0), ("image_feature_scale", False),
                        ("prompt_clean", False), ("prompt_state_unpadded", False),
                        ("num_heads", 8)):  # lerobot's joint attention reshapes to 8 heads
        if getattr(c, field) != want:
            raise CheckpointError(f"{field} {getattr(c, field)!r}: lerobot's {kind} computes with {want!r}")
    # Our loader reads the vision head count from the width (pretrained.sizes_from_shapes).
    heads = c.vision_width // 72 if c.vision_width % 72 == 0 else max(1, c.vision_width // 16)
    if c.vision_heads != heads:
        raise CheckpointError(f"vision_heads {c.vision_heads}: a {c.vision_width}-wide tower is read back with {heads}")
    if not custom_sizes:
        differ = {k: (getattr(c, k), v) for k, v in PI0_STOCK.items() if getattr(c, k) != v}
        if differ:
            raise CheckpointError(f"sizes {differ} (ours, lerobot's) are not lerobot's {kind}: {CUSTOM_SIZES_HINT}")
    return kind


def _features(c) -> tuple[dict, dict, int]:
    inputs, outputs, empty = lerobot_features(c.cameras, c.image_size, c.state_dim, c.action_dim)
    if c.cameras[len(c.cameras) - empty:] != [f"{EMPTY_CAMERA}{i}" for i in range(empty)]:
        raise CheckpointError(f"cameras {c.cameras}: lerobot's empty camera slots are a count after the real "
                              "cameras, named empty_camera_0, 1, ...")
    return inputs, outputs, empty


def pi0_config(c, kind: str) -> dict:
    inputs, outputs, empty = _features(c)
    return {
        "type": kind, "n_obs_steps": 1, "input_features": inputs, "output_features": outputs,
        "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m", "dtype": "float32",
        "chunk_size": c.chunk_size, "n_action_steps": c.n_action_steps, "max_state_dim": c.model_state_dim,
        "max_action_dim": c.model_action_dim, "num_inference_steps": c.num_inference_steps,
        "time_sampling_beta_alpha": c.time_beta_alpha, "time_sampling_beta_beta": c.time_beta_beta,
        "time_sampling_scale": c.time_scale, "time_sampling_offset": c.time_offset,
        "min_period": 4e-3, "max_period": 4.0,  # flow_vla's sinusoidal_time_embedding defaults
        "image_resolution": [c.image_size, c.image_size], "empty_cameras": empty,
        "normalization_mapping": lerobot_modes(c.normalization, kind), "tokenizer_max_length": c.max_language_tokens,
    }


def expert_mlp_width(width: int) -> int:
    """lerobot's SmolVLA expert MLP width for an expert width (smolvlm_with_expert.get_intermediate_size)."""
    hidden = int(4 * int(2 * width / 3))
    return 256 * ((hidden + 255) // 256)


def check_smolvla(c, custom_sizes: bool) -> None:
    """lerobot derives the expert from the VLM: width * expert_width_multiplier, its MLP from that width."""
    if int(c.width * (c.expert_width / c.width)) != c.expert_width:
        raise CheckpointError(f"expert_width {c.expert_width} is not int({c.width} * multiplier) for any float "
                              "multiplier lerobot could be given")
    if not custom_sizes and c.expert_mlp_dim != expert_mlp_width(c.expert_width):
        raise CheckpointError(f"expert_mlp_dim {c.expert_mlp_dim}: lerobot derives {expert_mlp_width(c.expert_width)} "
                              f"from the expert width {c.expert_width}; {CUSTOM_SIZES_HINT}")


def smolvla_config(c) -> dict:
    inputs, outputs, empty = _features(c)
    return {
        "type": "smolvla", "n_obs_steps": 1, "input_features": inputs, "output_features": outputs,
        "chunk_size": c.chunk_size, "n_action_steps": c.n_action_steps,
        "normalization_mapping": lerobot_modes(c.normalization, "smolvla"), "max_state_dim": c.model_state_dim,
        "max_action_dim": c.model_action_dim, "resize_imgs_with_padding": [c.image_size, c.image_size],
        "empty_cameras": empty, "adapt_to_pi_aloha": False, "use_delta_joint_actions_aloha": False,
        "tokenizer_max_length": c.max_language_tokens, "num_steps": c.num_inference_steps, "use_cache": True,
        # Every weight is in model.safetensors: lerobot builds the VLM from its config, downloads no weights.
        "vlm_model_name": c.vlm_model_name, "load_vlm_weights": False, "add_image_special_tokens": False,
        "attention_mode": "cross_attn", "prefix_length": -1, "pad_language_to": "longest", "num_expert_layers": -1,
        "num_vlm_layers": c.depth, "self_attn_every_n_layers": c.self_attn_every_n_layers,
        "expert_width_multiplier": c.expert_width / c.width,
        "min_period": c.time_min_period, "max_period": c.time_max_period,
    }

"""Load published pi0 / pi0.5 checkpoints from a local directory into FlowVLAPolicy.

vla.policy.registry.load_policy hands every checkpoint that is not this project's to load_foreign
here, which finds its layout, refuses (naming it) what it cannot read, and builds the policy.

Layouts (docs/PRETRAINED.md):
- lerobot: config.json ("type": "pi0" | "pi05") + model.safetensors + policy_preprocessor.json /
  policy_postprocessor.json with their normaliser safetensors;
- openpi's PyTorch port: model.safetensors + assets/<name>/norm_stats.json (+ an optional config.json
  without a lerobot type); pi0 vs pi0.5 is read from the tensor names.

Architecture sizes come from the tensor shapes (read from the safetensors header, before any
compute), so published and tiny test checkpoints go through the same code. Loading is strict:
missing, unexpected or mis-shaped tensors are refused with their names; allow_partial loads what
matches and prints what was left at random init. Nothing is downloaded.

lerobot SmolVLA checkpoints (type "smolvla") are dispatched to smolvla_load.py, which builds a
SmolVLAPolicy (same interface as FlowVLAPolicy). Both copy weights with weights.py, read lerobot's
metadata with lerobot_metadata.py and published names with weight_names.py (all in vla/policy/foreign/).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vla.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, read_config_json
from vla.policy.config import PolicyConfig
from vla.policy.flow_vla.policy import FlowVLAPolicy
from vla.policy.flow_vla.token_prompt import resolve_tokenizer_path
from vla.policy.foreign.lerobot_metadata import ACTION, STATE, lerobot_features, lerobot_normalization, prompt_length
from vla.policy.foreign.pi0_names import PI, canonical, infer_kind, to_ours
from vla.policy.foreign.weight_names import count_layers, map_names, require_tensors
from vla.policy.foreign.weights import build_policy, weights_header

KNOWN_POLICY_TYPES = {
    "pi0fast": "a pi0-FAST checkpoint (autoregressive action tokens, no flow-matching expert)",
    "diffusion": "a Diffusion Policy checkpoint (U-Net denoiser, no language model)",
    "act": "an ACT checkpoint (action-chunking transformer, no language model)",
    "vqbet": "a VQ-BeT checkpoint", "tdmpc": "a TD-MPC checkpoint", "sac": "a SAC checkpoint",
    "groot": "a GR00T checkpoint", "xvla": "an X-VLA checkpoint", "wall_x": "a WALL-OSS checkpoint",
}


def describe_foreign_checkpoint(directory: Path, kind, native_types: tuple[str, ...]) -> None:
    """Raise a CheckpointError that says what the directory holds (native_types: this project's own)."""
    if kind in KNOWN_POLICY_TYPES:
        raise CheckpointError(f"{directory} holds {KNOWN_POLICY_TYPES[kind]} (config type {kind!r}); "
                              "this loader reads flow_vla, lerobot pi0 / pi05 / smolvla and openpi pi0 / pi0.5 checkpoints")
    readable = ", ".join([repr(t) for t in native_types] + ["pi0", "pi05", "smolvla"])
    raise CheckpointError(f"{directory / CONFIG_FILE}: checkpoint type {kind!r} is not a policy this project reads "
                          f"(it reads {readable})")


def detect_layout(directory: Path, native_types: tuple[str, ...] = ()) -> str:
    """'lerobot' (pi0 / pi05), 'smolvla' (lerobot's) or 'openpi'; anything else is refused naming what
    it is (this project's own checkpoints, native_types, load through vla.policy.registry)."""
    directory = Path(directory)
    config = read_config_json(directory)
    kind = None if config is None else config.get("type")
    if kind in native_types:
        raise CheckpointError(f"{directory} is this project's {kind!r} checkpoint: load it with "
                              "vla.policy.registry.load_policy")
    if kind in ("pi0", "pi05"):
        return "lerobot"
    if kind == "smolvla":
        return "smolvla"
    if kind is not None:
        describe_foreign_checkpoint(directory, kind, native_types)
    if (directory / WEIGHTS_FILE).is_file() and any(canonical(k).startswith(PI) for k in weights_header(directory / WEIGHTS_FILE)):
        return "openpi"
    raise CheckpointError(f"{directory} is not a policy checkpoint: no {CONFIG_FILE} with a policy type and no "
                          "pi0-style weights")


# ------------------------------------------------------------------ sizes
def sizes_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict:
    """Architecture fields of PolicyConfig from the published tensor shapes."""
    s = {canonical(k): v for k, v in shapes.items()}
    vis = PI + "paligemma.model.vision_tower.vision_model."
    lm = PI + "paligemma.model.language_model."
    ex = PI + "gemma_expert.model."
    need = [vis + "embeddings.patch_embedding.weight", lm + "layers.0.self_attn.q_proj.weight",
            ex + "layers.0.self_attn.q_proj.weight", "action_in_proj.weight"]
    require_tensors(s, need, "pi0")
    vision_width, _, patch, _ = s[vis + "embeddings.patch_embedding.weight"]
    n_patches = s[vis + "embeddings.position_embedding.weight"][0]
    q_out, width = s[lm + "layers.0.self_attn.q_proj.weight"]
    # pi0's attention is 8 query heads over 1 KV head (lerobot hard-codes the 8); head_dim follows.
    num_heads = 8
    head_dim = q_out // num_heads
    num_kv = s[lm + "layers.0.self_attn.k_proj.weight"][0] // head_dim
    embed = s.get(PI + "paligemma.lm_head.weight") or s.get(lm + "embed_tokens.weight")
    if embed is None:
        raise CheckpointError("weights have no token embedding (paligemma lm_head / embed_tokens)")
    return dict(
        image_size=int(round(n_patches ** 0.5)) * patch, patch_size=patch, vision_width=vision_width,
        vision_layers=count_layers(s, vis + "encoder.layers."),
        # SigLIP So400m uses 72-wide heads; smaller test towers use 16-wide ones.
        vision_heads=vision_width // 72 if vision_width % 72 == 0 else max(1, vision_width // 16),
        vision_mlp_dim=s[vis + "encoder.layers.0.mlp.fc1.weight"][0], width=width,
        mlp_dim=s[lm + "layers.0.mlp.gate_proj.weight"][0], depth=count_layers(s, lm + "layers."),
        num_heads=num_heads, num_kv_heads=num_kv, head_dim=head_dim,
        expert_width=s[ex + "layers.0.self_attn.q_proj.weight"][1], expert_mlp_dim=s[ex + "layers.0.mlp.gate_proj.weight"][0],
        vocab_size=embed[0], max_action_dim=s["action_in_proj.weight"][1],
    )


def lerobot_config(directory: Path, shapes: dict, tokenizer_path: str = "") -> tuple[PolicyConfig, dict]:
    raw = json.loads((directory / CONFIG_FILE).read_text())
    kind = raw["type"]
    cameras, state_dim, action_dim = lerobot_features(directory, raw)
    mode, our_stats, eps = lerobot_normalization(directory, raw, state_dim, action_dim)
    sizes = sizes_from_shapes(shapes)
    resolution = raw.get("image_resolution", [sizes["image_size"]] * 2)
    if resolution[0] != resolution[1] or resolution[0] != sizes["image_size"]:
        raise CheckpointError(f"{directory}: image_resolution {resolution} does not match the vision tower "
                              f"({sizes['image_size']} px square)")
    config = PolicyConfig(
        preset="pi05" if kind == "pi05" else "pi0", state_dim=state_dim, action_dim=action_dim, cameras=cameras,
        chunk_size=raw.get("chunk_size", 50), n_action_steps=raw.get("n_action_steps", 50),
        num_inference_steps=raw.get("num_inference_steps", 10),
        time_conditioning="adarms" if kind == "pi05" else "mlp",
        time_beta_alpha=raw.get("time_sampling_beta_alpha", 1.5), time_beta_beta=raw.get("time_sampling_beta_beta", 1.0),
        time_scale=raw.get("time_sampling_scale", 0.999), time_offset=raw.get("time_sampling_offset", 0.001),
        max_language_tokens=prompt_length(directory, raw), normalization=mode, normalization_eps=eps,
        language="tokens", tokenizer_path=tokenizer_path, prompt_format=kind,
        max_state_dim=raw.get("max_state_dim", 32), image_resize="pad", image_pad_value=-3.0,
        image_feature_scale=False, **sizes,
    )
    return config, our_stats


def openpi_config(directory: Path, shapes: dict, kind: str, tokenizer_path: str = "", state_dim: int | None = None,
                  action_dim: int | None = None, cameras: list[str] | None = None, chunk_size: int = 50,
                  n_action_steps: int | None = None) -> tuple[PolicyConfig, dict]:
    """openpi's layout carries no feature list nor action horizon (they live in its training config):
    dims default to the norm stats' length, cameras to openpi's three, the horizon to 50."""
    found = sorted(directory.glob("assets/*/norm_stats.json"))
    if not found:
        raise CheckpointError(f"{directory}: openpi checkpoint without assets/<name>/norm_stats.json; "
                              "a policy never runs un-normalised")
    norm = json.loads(found[0].read_text()).get("norm_stats", {})
    if "state" not in norm or "actions" not in norm:
        raise CheckpointError(f"{found[0]}: needs 'state' and 'actions' statistics, has {sorted(norm)}")
    sizes = sizes_from_shapes(shapes)
    state_dim = state_dim or len(norm["state"]["mean"])
    action_dim = action_dim or len(norm["actions"]["mean"])
    quantiles = kind == "pi05"  # openpi normalises pi0.5 with quantiles, pi0 with mean / std
    stats = {}
    for feature, key, dim in ((STATE, "state", state_dim), (ACTION, "actions", action_dim)):
        st = {k: torch.tensor(v[:dim], dtype=torch.float32) for k, v in norm[key].items() if isinstance(v, list)}
        if quantiles and not {"q01", "q99"} <= set(st):
            raise CheckpointError(f"{found[0]}: pi0.5 normalises with quantiles but {key} has no q01 / q99")
        ones = torch.ones(dim)
        stats[feature] = ({"mean": 0 * ones, "std": ones, "min": st["q01"], "max": st["q99"]} if quantiles else
                          {"mean": st["mean"], "std": st["std"], "min": -ones, "max": ones})
    config = PolicyConfig(
        preset=kind, state_dim=state_dim, action_dim=action_dim, chunk_size=chunk_size,
        n_action_steps=n_action_steps or chunk_size,
        cameras=cameras or ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"],
        time_conditioning="adarms" if kind == "pi05" else "mlp", language="tokens", tokenizer_path=tokenizer_path,
        prompt_format=kind, prompt_clean=kind == "pi0", prompt_state_unpadded=kind == "pi05",
        max_language_tokens=200 if kind == "pi05" else 48,
        normalization="min_max" if quantiles else "mean_std", normalization_eps=1e-6,
        max_state_dim=sizes["max_action_dim"], image_resize="pad", image_pad_value=-1.0, image_feature_scale=False,
        **sizes,
    )
    return config, stats


def load_foreign(directory, tokenizer_path: str = "", allow_partial: bool = False, dtype: str = "float32",
                 native_types: tuple[str, ...] = (), **openpi_dims):
    """A FlowVLAPolicy from a lerobot pi0 / pi05 or openpi pi0 / pi0.5 checkpoint directory; a
    SmolVLAPolicy (same interface) from a lerobot smolvla one. Called by vla.policy.registry.load_policy."""
    directory = Path(directory)
    layout = detect_layout(directory, native_types)
    weights = directory / WEIGHTS_FILE
    shapes = weights_header(weights)
    tokenizer_path = resolve_tokenizer_path(tokenizer_path, directory)
    if layout == "smolvla":
        from vla.policy.foreign.smolvla_load import load_lerobot_smolvla

        return load_lerobot_smolvla(directory, shapes, tokenizer_path, allow_partial, dtype)
    if layout == "lerobot":
        kind = json.loads((directory / CONFIG_FILE).read_text())["type"]
        config, stats = lerobot_config(directory, shapes, tokenizer_path)
    else:
        kind = infer_kind(shapes)
        config, stats = openpi_config(directory, shapes, kind, tokenizer_path, **openpi_dims)
    if infer_kind(shapes) != kind:
        raise CheckpointError(f"{directory}: config says {kind} but the weights are {infer_kind(shapes)}")
    # The tied head and embed_tokens name one table: map_names keeps the first.
    mapping, unexpected = map_names(shapes, lambda key: to_ours(key, kind))
    return build_policy(FlowVLAPolicy, config, stats, weights, mapping, unexpected, allow_partial, dtype)


def checkpoint_chunking(directory) -> tuple[int, int]:
    """(chunk_size, n_action_steps) a checkpoint was trained with (openpi's layout does not say: 50)."""
    path = Path(directory) / CONFIG_FILE
    raw = json.loads(path.read_text()) if path.is_file() else {}
    chunk = int(raw.get("chunk_size") or 50)
    return chunk, int(raw.get("n_action_steps") or chunk)

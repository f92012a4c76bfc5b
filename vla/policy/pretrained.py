"""Load published pi0 / pi0.5 checkpoints from a local directory into FlowVLAPolicy.

Layouts (docs/PRETRAINED.md):
- lerobot: config.json ("type": "pi0" | "pi05") + model.safetensors + policy_preprocessor.json /
  policy_postprocessor.json with their normaliser safetensors;
- openpi's PyTorch port: model.safetensors + assets/<name>/norm_stats.json (+ an optional config.json
  without a lerobot type); pi0 vs pi0.5 is read from the tensor names.

Architecture sizes come from the tensor shapes (read from the safetensors header, before any
compute), so published and tiny test checkpoints go through the same code. Loading is strict:
missing, unexpected or mis-shaped tensors are refused with their names; allow_partial loads what
matches and prints what was left at random init. Nothing is downloaded.

lerobot SmolVLA checkpoints (type "smolvla") are dispatched to vla/policy/smolvla_load.py, which
builds a SmolVLAPolicy (same interface as FlowVLAPolicy) through this module's build_policy and
weight copier. Both read lerobot's metadata with vla/policy/lerobot_metadata.py and published
names with vla/policy/weight_names.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from vla.policy.checkpoint import CONFIG_FILE, POLICY_TYPE, STATE_FLOW_TYPE, WEIGHTS_FILE, CheckpointError
from vla.policy.config import PolicyConfig
from vla.policy.lerobot_metadata import ACTION, STATE, lerobot_features, lerobot_normalization, prompt_length
from vla.policy.pi0_names import PI, canonical, infer_kind, to_ours
from vla.policy.smolvla_config import SMOLVLA_TYPE
from vla.policy.token_prompt import resolve_tokenizer_path
from vla.policy.weight_names import count_layers, map_names, require_tensors

KNOWN_POLICY_TYPES = {
    "pi0fast": "a pi0-FAST checkpoint (autoregressive action tokens, no flow-matching expert)",
    "diffusion": "a Diffusion Policy checkpoint (U-Net denoiser, no language model)",
    "act": "an ACT checkpoint (action-chunking transformer, no language model)",
    "vqbet": "a VQ-BeT checkpoint", "tdmpc": "a TD-MPC checkpoint", "sac": "a SAC checkpoint",
    "groot": "a GR00T checkpoint", "xvla": "an X-VLA checkpoint", "wall_x": "a WALL-OSS checkpoint",
}


def describe_foreign_checkpoint(directory: Path, kind) -> None:
    """Raise a CheckpointError that says what the directory holds."""
    if kind in KNOWN_POLICY_TYPES:
        raise CheckpointError(f"{directory} holds {KNOWN_POLICY_TYPES[kind]} (config type {kind!r}); "
                              "this loader reads flow_vla, lerobot pi0 / pi05 / smolvla and openpi pi0 / pi0.5 checkpoints")
    if kind in ("pi0", "pi05", "smolvla"):
        raise CheckpointError(f"{directory} is a lerobot {kind} checkpoint: load it with vla.policy.pretrained.load_pretrained")
    raise CheckpointError(f"{directory / CONFIG_FILE}: checkpoint type {kind!r} is not a policy this project reads "
                          f"(it reads {POLICY_TYPE!r}, {STATE_FLOW_TYPE!r}, {SMOLVLA_TYPE!r}, pi0, pi05, smolvla)")


def _weights_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from the safetensors header; a truncated file is refused here, before any compute."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: weights file {path.name} is missing")
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc
    return shapes


def detect_layout(directory: Path) -> str:
    """'flow_vla' (ours, pi0 or SmolVLA structure), 'lerobot' (pi0 / pi05), 'smolvla' (lerobot's) or
    'openpi'; anything else is refused naming what it is."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    kind = None
    if config_path.is_file():
        try:
            kind = json.loads(config_path.read_text()).get("type")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise CheckpointError(f"{config_path} is not a JSON object: {exc}") from exc
    if kind in (POLICY_TYPE, SMOLVLA_TYPE, STATE_FLOW_TYPE):
        return "flow_vla"
    if kind in ("pi0", "pi05"):
        return "lerobot"
    if kind == "smolvla":
        return "smolvla"
    if kind is not None:
        describe_foreign_checkpoint(directory, kind)
    if (directory / WEIGHTS_FILE).is_file() and any(canonical(k).startswith(PI) for k in _weights_header(directory / WEIGHTS_FILE)):
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
        image_feature_scale=True, **sizes,
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
        prompt_format=kind, max_language_tokens=200 if kind == "pi05" else 48,
        normalization="min_max" if quantiles else "mean_std", normalization_eps=1e-6,
        max_state_dim=sizes["max_action_dim"], image_resize="pad", image_pad_value=-1.0, image_feature_scale=True,
        **sizes,
    )
    return config, stats


# ------------------------------------------------------------------ weights
def _target_shape(name: str, expected: dict[str, torch.Size], shape: tuple[int, ...]) -> tuple[int, ...]:
    # pi0.5's final expert norm carries a residual gate it never uses; we keep scale and shift only.
    if name.startswith("transformer.expert.norm.dense.") and shape[0] == 3 * expected[name][0] // 2:
        return tuple(expected[name])
    return shape


def load_weights(policy, path: Path, mapping: dict[str, str], unexpected: list[str], allow_partial: bool,
                 dtype: torch.dtype) -> list[str]:
    """Copy the mapped tensors in one at a time (peak memory: the model plus one tensor); returns names left at init."""
    expected = {k: v.shape for k, v in policy.state_dict().items() if not k.startswith("normalizer.")}
    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in mapping}
    mismatched = sorted(f"{src} -> {dst}: checkpoint {shapes[src]} vs model {tuple(expected[dst])}"
                        for src, dst in mapping.items()
                        if dst in expected and _target_shape(dst, expected, shapes[src]) != tuple(expected[dst]))
    unknown = sorted(f"{src} -> {dst}" for src, dst in mapping.items() if dst not in expected)
    missing = sorted(set(expected) - set(mapping.values()))
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected or unknown:
        problems.append(f"unexpected {unexpected + unknown}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched}")
    if problems and not allow_partial:
        raise CheckpointError(f"{path} does not match the model it describes: " + "; ".join(problems)
                              + " (allow_partial=True loads what matches)")
    modules = dict(policy.named_modules())
    bad = {m.split(" ->")[0] for m in mismatched} | {u.split(" ->")[0] for u in unknown}
    with safe_open(str(path), "pt") as f, torch.no_grad():
        for src, dst in mapping.items():
            if src in bad:
                continue
            tensor = f.get_tensor(src)
            if dst.startswith("transformer.expert.norm.dense."):
                tensor = tensor[: expected[dst][0]]
            owner, _, leaf = dst.rpartition(".")
            # A new Parameter rather than copy_: the model may live on the meta device.
            setattr(modules[owner], leaf, torch.nn.Parameter(tensor.to(dtype).contiguous()))
    left = sorted(missing + [m.split(" -> ")[1].split(":")[0] for m in mismatched])
    if problems:
        print(f"allow_partial: {len(left)} tensors left at random init: {left}; ignored from the checkpoint: "
              f"{unexpected + unknown}")
    return left


def load_pretrained(directory, tokenizer_path: str = "", allow_partial: bool = False, dtype: str = "float32",
                    **openpi_dims):
    """A FlowVLAPolicy from a flow_vla, lerobot pi0 / pi05 or openpi pi0 / pi0.5 checkpoint directory;
    a SmolVLAPolicy (same interface) from a lerobot smolvla one or one this project saved."""
    from vla.policy.checkpoint import load_policy
    from vla.policy.flow_vla import FlowVLAPolicy

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"policy checkpoint {directory} does not exist or is not a directory")
    layout = detect_layout(directory)
    if layout == "flow_vla":
        return load_policy(directory)
    weights = directory / WEIGHTS_FILE
    shapes = _weights_header(weights)
    tokenizer_path = resolve_tokenizer_path(tokenizer_path, directory)
    if layout == "smolvla":
        from vla.policy.smolvla_load import load_lerobot_smolvla

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


def build_policy(policy_cls, config, stats: dict, weights: Path, mapping: dict[str, str], unexpected: list[str],
                 allow_partial: bool, dtype: str):
    """policy_cls(config) in dtype with the mapped weights and the statistics loaded, in eval mode."""
    config.dtype = dtype
    torch_dtype = getattr(torch, dtype)
    if allow_partial:
        policy = policy_cls(config).to(torch_dtype)  # what is not in the checkpoint keeps a real random init
    else:
        # Built on the meta device: a 3B model is never materialised twice (random init, then weights).
        with torch.device("meta"):
            policy = policy_cls(config)
    load_weights(policy, weights, mapping, unexpected, allow_partial, torch_dtype)
    policy.materialize_buffers()
    policy.normalizer.load_stats(stats)
    return policy.eval()


def init_for_dataset(pcfg: PolicyConfig, dataset_stats: dict, dataset_cameras: list[str]):
    """`vla train --policy.init=PATH`: the checkpoint's architecture and weights, the dataset's
    dims and normalisation stats, the fine-tuning options of pcfg."""
    from vla.policy.finetune import apply_finetune_options
    from vla.policy.flow_vla import policy_normalizer

    policy = load_pretrained(pcfg.init, tokenizer_path=pcfg.tokenizer_path)
    c = policy.config
    missing = [cam for cam in c.cameras if cam not in dataset_cameras and not cam.startswith("empty_camera_")]
    if missing:
        raise CheckpointError(f"{pcfg.init}: the checkpoint's cameras {c.cameras} are not all in the dataset "
                              f"(missing {missing}; the dataset has {dataset_cameras})")
    if pcfg.state_dim > c.model_state_dim or pcfg.action_dim > c.model_action_dim:
        raise CheckpointError(f"{pcfg.init}: dataset state / action dims ({pcfg.state_dim}, {pcfg.action_dim}) exceed "
                              f"the checkpoint's ({c.model_state_dim}, {c.model_action_dim})")
    c.max_state_dim, c.max_action_dim = c.model_state_dim, c.model_action_dim
    c.state_dim, c.action_dim = pcfg.state_dim, pcfg.action_dim
    for key in ("freeze_vision", "train_expert_only", "gradient_checkpointing", "dtype", "lora_rank", "lora_alpha"):
        setattr(c, key, getattr(pcfg, key))
    c.init = pcfg.init
    # Fine-tuning normalises with the new data's statistics, as lerobot does.
    policy.normalizer = policy_normalizer(c)
    if c.prompt_format == "pi05":  # pi0.5 normalises with the 1st / 99th percentiles
        dataset_stats = {k: {**v, "min": v.get("q01", v["min"]), "max": v.get("q99", v["max"])}
                         for k, v in dataset_stats.items()}
    policy.normalizer.load_stats(dataset_stats)
    pcfg.__dict__.update(c.__dict__)  # the run's resolved config records what was built
    counts = apply_finetune_options(policy)
    print(f"initialised from {pcfg.init}: {counts['trainable'] / 1e6:.2f}M trainable, "
          f"{counts['frozen'] / 1e6:.2f}M frozen parameters")
    return policy


def checkpoint_chunking(directory) -> tuple[int, int]:
    """(chunk_size, n_action_steps) a checkpoint was trained with (openpi's layout does not say: 50)."""
    path = Path(directory) / CONFIG_FILE
    raw = json.loads(path.read_text()) if path.is_file() else {}
    chunk = int(raw.get("chunk_size") or 50)
    return chunk, int(raw.get("n_action_steps") or chunk)

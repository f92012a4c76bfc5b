"""`vla export --format lerobot`: one of our checkpoints as a lerobot 0.4.x checkpoint directory.

A flow_vla policy in pi0's layout becomes lerobot `pi0` or `pi05`, a flow_vla_smolvla one lerobot
`smolvla`: config.json (lerobot_export_config.py), model.safetensors under lerobot's parameter names
(the loaders' name tables read backwards, pi0_names.NAMES / smolvla_names.NAMES), and the processor
files with our normalisation converted to lerobot's formulas (lerobot_processors.py). Our tokenizer
is copied to tokenizer/ so our loader reads the export back; lerobot loads its tokenizer by name.
Other policy types are refused, naming why. Written into a temporary directory and renamed into
place (checkpoint.atomic_directory_write).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from vla.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, atomic_directory_write, read_config_json
from vla.policy.finetune import export_state_dict
from vla.policy.foreign import lerobot_export_config as layout
from vla.policy.foreign.lerobot_processors import PALIGEMMA_TOKENIZER, lerobot_stats, write_processors
from vla.policy.registry import load_policy

EXPORTABLE = {"flow_vla": "lerobot pi0 / pi05 (by its prompt format and time conditioning)",
              "flow_vla_smolvla": "lerobot smolvla"}
# Our types lerobot has no policy for, and why.
NOT_EXPORTABLE = {
    "state_flow": "a state-only flow policy (no images, no language model); lerobot's flow-matching policies are VLAs",
    "steered": "a frozen base policy steered by an RL actor lerobot has no counterpart of; export its base policy",
}


def refuse_type(directory: Path, kind) -> None:
    supported = "; ".join(f"{k} -> {v}" for k, v in EXPORTABLE.items())
    why = NOT_EXPORTABLE.get(kind, "not a policy type lerobot has an equivalent of")
    raise CheckpointError(f"{directory}: policy type {kind!r} cannot be exported to lerobot: {why}. "
                          f"Exportable types: {supported}")


def pi0_weights(policy) -> dict[str, torch.Tensor]:
    """lerobot's pi0 / pi05 state dict: every tensor its model holds, so its strict load accepts it."""
    from vla.policy.foreign.pi0_names import PI, lerobot_names

    out = {}
    for name, tensor in export_state_dict(policy).items():
        if name.startswith("normalizer."):
            continue
        if name.startswith("transformer.expert.norm.dense."):  # pi0.5's final norm: lerobot's also has a gate
            gate = torch.zeros((tensor.shape[0] // 2, *tensor.shape[1:]), dtype=tensor.dtype)
            tensor = torch.cat([tensor, gate])  # ... that it never uses (weights.py drops it when loading)
        for published in lerobot_names(name):
            out[published] = tensor
    c = policy.config
    # The expert's token head: held by lerobot's Gemma, never used for actions (pi0_names.UNUSED).
    out[f"model.{PI}gemma_expert.lm_head.weight"] = torch.zeros(c.vocab_size, c.expert_width)
    return out


def smolvla_weights(policy) -> dict[str, torch.Tensor]:
    from vla.policy.foreign.smolvla_names import NAMES, VLM

    out = {}
    for name, tensor in export_state_dict(policy).items():
        if name.startswith("normalizer."):
            continue
        published = NAMES.published_names(name)
        if not published:
            raise CheckpointError(f"parameter {name!r} has no lerobot SmolVLA name")
        out[published[0]] = tensor
    # SmolVLM's token head, never used for actions (smolvla_names.UNUSED). The embedding, not zeros:
    # a backbone that ties the two would otherwise load a zeroed embedding.
    out[VLM + "lm_head.weight"] = out[VLM + "model.text_model.embed_tokens.weight"]
    return out


def export_lerobot(policy_dir, output, overwrite: bool = False, custom_sizes: bool = False) -> Path:
    """Write the checkpoint in policy_dir to output as a lerobot checkpoint; returns output."""
    policy_dir, output = Path(policy_dir), Path(output)
    if output.exists() and not overwrite:
        raise CheckpointError(f"output {output} exists; pass --overwrite=true to replace it")
    if output.resolve() == policy_dir.resolve():
        raise CheckpointError(f"output {output} is the checkpoint being exported")
    raw = read_config_json(policy_dir) if policy_dir.is_dir() else None
    kind = raw.get("type") if raw else None
    if kind in NOT_EXPORTABLE:  # refused before any weights load
        refuse_type(policy_dir, kind)
    policy = load_policy(policy_dir)
    c = policy.config
    cls = type(policy).__name__
    if cls not in ("SmolVLAPolicy", "FlowVLAPolicy"):
        refuse_type(policy_dir, getattr(policy, "checkpoint_type", cls))
    try:
        if cls == "SmolVLAPolicy":
            layout.check_smolvla(c, custom_sizes)
            lerobot_kind, config, weights = "smolvla", layout.smolvla_config(c), smolvla_weights(policy)
            tokenizer_name = c.vlm_model_name
        else:
            lerobot_kind = layout.pi0_kind(c, custom_sizes)
            config, weights = layout.pi0_config(c, lerobot_kind), pi0_weights(policy)
            tokenizer_name = PALIGEMMA_TOKENIZER
    except CheckpointError as exc:
        raise CheckpointError(f"{policy_dir} cannot be exported to lerobot: {exc}") from None
    stats = lerobot_stats(policy.normalizer, config["normalization_mapping"])
    features = {**config["input_features"], **config["output_features"]}

    def write(tmp: Path) -> None:
        # Clones: safetensors refuses tensors that share memory (the tied embedding's two names).
        save_file({k: v.detach().float().cpu().contiguous().clone() for k, v in weights.items()},
                  str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=4))
        write_processors(tmp, lerobot_kind, features, config["normalization_mapping"], stats, c.max_language_tokens,
                         tokenizer_name, config["max_state_dim"])
        if c.tokenizer_path and Path(c.tokenizer_path).is_dir():
            shutil.copytree(c.tokenizer_path, tmp / "tokenizer")

    return atomic_directory_write(output, write)

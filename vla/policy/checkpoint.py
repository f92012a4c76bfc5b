"""Policy checkpoints: config.json + model.safetensors + normalization_stats.safetensors.

Written into a temporary sibling directory and renamed into place, so an
interrupted save never leaves something that loads as a complete checkpoint.
Loading is strict: missing stats, missing or unexpected tensors and shape
mismatches are refused with the offending names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vla.errors import UserError
from vla.policy.config import PolicyConfig
from vla.policy.smolvla_config import SMOLVLA_TYPE, SmolVLAConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "normalization_stats.safetensors"
POLICY_TYPE = "flow_vla"
# Written by vla/policy/state_flow (not imported here: loading a VLA needs none of it).
STATE_FLOW_TYPE = "state_flow"


class CheckpointError(UserError, ValueError):
    pass


def atomic_directory_write(directory: Path, write) -> Path:
    """Call write(tmp_dir), then move tmp_dir to directory (replacing an older one)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def save_policy(policy, directory) -> Path:
    if not bool(policy.normalizer.loaded):
        raise CheckpointError("refusing to save a policy without normalisation statistics")

    def write(tmp: Path) -> None:
        from vla.policy.finetune import export_state_dict

        weights = {k: v.detach().cpu().contiguous() for k, v in export_state_dict(policy).items()
                   if not k.startswith("normalizer.")}
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        stats = {k: v.cpu().contiguous() for k, v in policy.normalizer.state_dict_stats().items()}
        save_file(stats, str(tmp / STATS_FILE))
        kind = getattr(policy, "checkpoint_type", POLICY_TYPE)  # SmolVLAPolicy saves its own type
        config = {**policy.config.to_dict(), "type": kind, "lora_rank": 0}  # LoRA is saved merged
        if policy.config.language == "tokens" and policy.config.tokenizer_path:
            # The token table is only meaningful with its tokenizer: keep them together.
            shutil.copytree(policy.config.tokenizer_path, tmp / "tokenizer")
            config["tokenizer_path"] = ""
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    return atomic_directory_write(Path(directory), write)


def read_config(directory: Path) -> PolicyConfig:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a policy checkpoint: {CONFIG_FILE} is missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    kind = data.pop("type", None)
    if kind == STATE_FLOW_TYPE:
        data["type"] = kind
        try:
            return PolicyConfig.from_dict(data, source=str(path))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
    if kind == SMOLVLA_TYPE:
        try:
            return SmolVLAConfig.from_dict(data, source=str(path))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
    if kind != POLICY_TYPE:
        from vla.policy.pretrained import describe_foreign_checkpoint

        describe_foreign_checkpoint(directory, kind)  # raises, naming what the directory holds
        raise CheckpointError(f"{path}: checkpoint type is {kind!r}, this loader reads {POLICY_TYPE!r} policies")
    try:
        return PolicyConfig.from_dict(data, source=str(path))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {what} file {path.name} is missing; "
                              "a policy never runs without its normalisation statistics" if what == "stats" else
                              f"{path.parent}: {what} file {path.name} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def load_policy(directory, map_location="cpu"):
    from vla.policy.flow_vla import FlowVLAPolicy

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"policy checkpoint {directory} does not exist or is not a directory")
    from vla.policy.pretrained import detect_layout, load_pretrained

    if detect_layout(directory) != "flow_vla":  # published pi0 / pi0.5 layouts load through the name mapping
        return load_pretrained(directory).to(map_location).eval()
    config = read_config(directory)
    if config.language == "tokens":
        from vla.policy.token_prompt import resolve_tokenizer_path

        config.tokenizer_path = resolve_tokenizer_path(config.tokenizer_path, directory)
    stats = _load_tensors(directory / STATS_FILE, "stats")
    weights = _load_tensors(directory / WEIGHTS_FILE, "weights")
    if isinstance(config, SmolVLAConfig):
        from vla.policy.smolvla import SmolVLAPolicy

        policy = SmolVLAPolicy(config)
    elif config.type == STATE_FLOW_TYPE:
        from vla.policy.state_flow import StateFlowPolicy

        policy = StateFlowPolicy(config)
    else:
        policy = FlowVLAPolicy(config)
    expected = {k: v for k, v in policy.state_dict().items() if not k.startswith("normalizer.")}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = sorted(f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                        for k, v in expected.items() if k in weights and weights[k].shape != v.shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} does not match its config: missing {missing[:10]}, "
                              f"unexpected {unexpected[:10]}, shape mismatches {mismatched[:10]}")
    policy.load_state_dict(weights, strict=False)
    nested: dict[str, dict] = {}
    for name, value in stats.items():
        key, _, stat = name.rpartition("/")
        nested.setdefault(key, {})[stat] = value
    try:
        policy.normalizer.load_stats(nested)
    except ValueError as exc:
        raise CheckpointError(f"{directory / STATS_FILE}: {exc}") from exc
    return policy.to(map_location).eval()

"""The checkpoint file format: config.json + model.safetensors + normalization_stats.safetensors.

Written into a temporary sibling directory and renamed into place, so an
interrupted save never leaves something that loads as a complete checkpoint.
Loading is strict: missing stats, missing or unexpected tensors and shape
mismatches are refused with the offending names.

This is the bottom of vla/policy: it knows no policy class. config.json's "type" names the
policy class (vla/policy/registry.py, whose load_policy builds it and calls load_state here).
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
from vla.policy.finetune import export_state_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "normalization_stats.safetensors"


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
        weights = {k: v.detach().cpu().contiguous() for k, v in export_state_dict(policy).items()
                   if not k.startswith("normalizer.")}
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        stats = {k: v.cpu().contiguous() for k, v in policy.normalizer.state_dict_stats().items()}
        save_file(stats, str(tmp / STATS_FILE))
        # The policy class's registry key (vla/policy/registry.py), not necessarily its config's type field.
        config = {**policy.config.to_dict(), "type": policy.checkpoint_type, "lora_rank": 0}  # LoRA is saved merged
        if policy.config.language == "tokens" and policy.config.tokenizer_path:
            # The token table is only meaningful with its tokenizer: keep them together.
            shutil.copytree(policy.config.tokenizer_path, tmp / "tokenizer")
            config["tokenizer_path"] = ""
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    return atomic_directory_write(Path(directory), write)


def read_config_json(directory: Path) -> dict | None:
    """config.json as a dict, None when the directory has none."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object: it holds a {type(data).__name__}")
    return data


def load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {what} file {path.name} is missing; "
                              "a policy never runs without its normalisation statistics" if what == "stats" else
                              f"{path.parent}: {what} file {path.name} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def read_state(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights, stats) of a checkpoint, read before the model is built (a missing or truncated file
    is refused before any compute)."""
    stats = load_tensors(directory / STATS_FILE, "stats")
    weights = load_tensors(directory / WEIGHTS_FILE, "weights")
    return weights, stats


def load_state(policy, directory: Path, weights: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> None:
    """Load read_state's tensors into policy: every tensor must match by name and shape."""
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

"""Policy types by config.json "type", and load_policy: the one loader of every checkpoint.

A policy type is a folder (vla/policy/flow_vla/, smolvla/, state_flow/) whose policy class sets
`checkpoint_type` (the key below, which save_policy writes into config.json) and implements
`config_from_dict`. Adding one is a new folder plus one line here. Classes are named as
"module:Class" strings and imported on use, so loading a policy imports its own folder only.

Checkpoints of other projects (lerobot pi0 / pi0.5 / SmolVLA, openpi pi0 / pi0.5; a config.json
type not listed here, or none) go through vla/policy/foreign/, which builds the same classes.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from vla.policy.checkpoint import CONFIG_FILE, CheckpointError, load_state, read_config_json, read_state

POLICY_TYPES: dict[str, str] = {
    "flow_vla": "vla.policy.flow_vla.policy:FlowVLAPolicy",
    "flow_vla_smolvla": "vla.policy.smolvla.policy:SmolVLAPolicy",
    "state_flow": "vla.policy.state_flow.policy:StateFlowPolicy",
    "steered": "vla.policy.steered.policy:SteeredPolicy",
}


def policy_class(kind: str) -> type:
    """The policy class of a config.json "type" of this project."""
    if kind not in POLICY_TYPES:
        raise KeyError(f"unknown policy type {kind!r}; this project's types: {sorted(POLICY_TYPES)}")
    module, _, name = POLICY_TYPES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def load_policy(directory, map_location="cpu", **foreign_options):
    """The policy in a checkpoint directory, on map_location, in eval mode.

    This project's checkpoints (config.json type in POLICY_TYPES) load strictly into their class;
    anything else goes to the foreign loaders (vla/policy/foreign/pretrained.py), which take
    foreign_options (tokenizer_path, allow_partial, dtype, and openpi's state_dim, action_dim,
    cameras, chunk_size, n_action_steps) and refuse, naming it, what they cannot read."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"policy checkpoint {directory} does not exist or is not a directory")
    data = read_config_json(directory)
    kind = data.pop("type", None) if data is not None else None
    if kind not in POLICY_TYPES:
        from vla.policy.foreign.pretrained import load_foreign

        policy = load_foreign(directory, native_types=tuple(POLICY_TYPES), **foreign_options)
        # A published checkpoint: its config records none of our provenance (image convention, demo
        # initial states); `vla eval` assumes LIBERO's published conventions for it (vla/eval/evaluate.py).
        policy.foreign_checkpoint = True
        return policy.to(map_location).eval()
    cls = policy_class(kind)
    if hasattr(cls, "load_checkpoint"):  # a composite checkpoint (a steered policy holds its base's)
        return cls.load_checkpoint(directory, data, map_location=map_location, load_base=load_policy)
    try:
        config = cls.config_from_dict(data, source=str(directory / CONFIG_FILE))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from exc
    if config.language == "tokens":  # the token table is only meaningful with its tokenizer
        from vla.policy.flow_vla.token_prompt import resolve_tokenizer_path

        config.tokenizer_path = resolve_tokenizer_path(config.tokenizer_path, directory)
    weights, stats = read_state(directory)
    policy = cls(config)
    load_state(policy, directory, weights, stats)
    return policy.to(map_location).eval()

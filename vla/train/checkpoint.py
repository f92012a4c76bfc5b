"""Resumable training checkpoints (`vla train`, `vla rl`): policy, optimizer, scheduler and every RNG,
without pickle.

Layout of a checkpoint directory (written into a temporary sibling and renamed
into place, so a kill mid-save leaves the previous checkpoint intact):

    policy/                      save_pretrained (+ whatever the trainer writes beside it: RL's heads)
    optimizer.safetensors        optimizer state tensors, keyed "state/<param id>/<name>"
    rng.safetensors              torch CPU RNG, the sampling generator, CUDA RNGs (uint8 tensors)
    trainer_state.json           iteration, history, optimizer param groups and non-tensor
                                 state, scheduler state, numpy and python RNG states

Restoring all of it makes a resumed run produce the same numbers as one that
was never interrupted.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from typing import Callable

from vla.policy.checkpoint import CheckpointError, atomic_directory_write

POLICY_DIR = "policy"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 1


# ---------------------------------------------------------------- optimizer
def optimizer_state_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() -> (tensors for safetensors, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split("/", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- scheduler
def scheduler_state(scheduler) -> dict:
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def load_scheduler_state(scheduler, state: dict) -> None:
    scheduler.load_state_dict({**state, "lr_lambdas": [None] * len(scheduler.lr_lambdas)})


# ---------------------------------------------------------------- RNG
def rng_state(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state(), "sampling_generator": generator.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["sampling_generator"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ---------------------------------------------------------------- whole checkpoint
def save_training_checkpoint(directory: Path, policy, optimizer, scheduler, generator: torch.Generator,
                             iteration: int, history: list[dict], extra: dict | None = None,
                             write_beside_policy: Callable[[Path], None] | None = None,
                             write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write everything a resume needs into `directory` atomically; `iteration` = iterations (or steps)
    completed. `write_beside_policy(policy_dir)` adds the trainer's own modules (RL's heads),
    `write_extra(checkpoint_dir)` the trainer's own state files (filtered BC's success buffer)."""
    opt_tensors, opt_meta = optimizer_state_split(optimizer)
    rng_tensors, rng_meta = rng_state(generator)
    state = {"format_version": FORMAT_VERSION, "iteration": iteration, "history": history,
             "optimizer": opt_meta, "scheduler": scheduler_state(scheduler), "rng": rng_meta, **(extra or {})}

    def write(tmp: Path) -> None:
        policy.save_pretrained(tmp / POLICY_DIR)
        if write_beside_policy is not None:
            write_beside_policy(tmp / POLICY_DIR)
        save_file(opt_tensors, str(tmp / OPTIMIZER_FILE))
        save_file(rng_tensors, str(tmp / RNG_FILE))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        if write_extra is not None:
            write_extra(tmp)

    return atomic_directory_write(Path(directory), write)


def read_training_state(directory: Path) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a training checkpoint: {STATE_FILE} is missing")
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {state.get('format_version')!r}, expected {FORMAT_VERSION}")
    return state


def restore_training_state(directory: Path, optimizer, scheduler, generator: torch.Generator) -> dict:
    """Load optimizer, scheduler and RNG states (call after every module is built: building
    modules draws from torch's RNG). Returns the trainer state (iteration, history, ...)."""
    directory = Path(directory)
    state = read_training_state(directory)
    try:
        opt_tensors = load_file(str(directory / OPTIMIZER_FILE))
        rng_tensors = load_file(str(directory / RNG_FILE))
        optimizer.load_state_dict(optimizer_state_join(opt_tensors, state["optimizer"]))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{directory}: cannot restore the optimizer / RNG state: {exc}") from exc
    load_scheduler_state(scheduler, state["scheduler"])
    restore_rng(rng_tensors, state["rng"], generator)
    return state

"""Small modules RL adds beside the policy, and how they are stored.

- ValueHead: PPO's critic, an MLP on the pooled prefix features and the normalised state.
- NoiseHead (vla.policy.sampling): Flow-Noise's learned std.

Neither is part of the deployed policy: each is saved as ``<name>.safetensors`` plus
``<name>.json`` (its constructor arguments) next to the policy checkpoint, and a policy
directory without one gets a fresh head (the trainer says so).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vla.policy.flow_matching_policy import STATE_KEY
from vla.policy.sampling import NoiseHead

VALUE_HEAD = "value_head"
NOISE_HEAD = "noise_head"


class ValueHead(nn.Module):
    """V(obs) from [pooled prefix features, normalised state] -> scalar."""

    def __init__(self, feature_dim: int, state_dim: int, hidden: int = 256):
        super().__init__()
        self.feature_dim, self.state_dim, self.hidden = feature_dim, state_dim, hidden
        self.net = nn.Sequential(
            nn.Linear(feature_dim + state_dim, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, pooled: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([pooled.float(), state.float()], dim=-1)).squeeze(-1)

    def config(self) -> dict:
        return {"feature_dim": self.feature_dim, "state_dim": self.state_dim, "hidden": self.hidden}


def value_inputs(policy, batch: dict, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features, normalised state) for the value head.

    The features are detached: the critic is a separate learner and its loss must not
    move the policy the robot will run."""
    state = policy.normalizer.normalize(STATE_KEY, batch[STATE_KEY].to(policy.device).float())
    return pooled.detach(), state


HEAD_TYPES = {VALUE_HEAD: ValueHead, NOISE_HEAD: NoiseHead}


def save_head(head: nn.Module, directory: str | os.PathLike, name: str) -> None:
    """Write ``name.safetensors`` and ``name.json`` into directory (each via a temp file + rename)."""
    directory = Path(directory)
    weights = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    tmp = directory / f".{name}.safetensors.tmp"
    save_file(weights, str(tmp))
    os.replace(tmp, directory / f"{name}.safetensors")
    tmp = directory / f".{name}.json.tmp"
    tmp.write_text(json.dumps(head.config(), indent=2))
    os.replace(tmp, directory / f"{name}.json")


def has_head(directory: str | os.PathLike, name: str) -> bool:
    return (Path(directory) / f"{name}.safetensors").is_file()


def load_head(directory: str | os.PathLike, name: str) -> nn.Module:
    from vla.policy.checkpoint import CheckpointError

    directory = Path(directory)
    cfg_path, weights_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    if not cfg_path.is_file():
        raise CheckpointError(f"{weights_path} has no {cfg_path.name} beside it (the head's sizes)")
    try:
        head = HEAD_TYPES[name](**json.loads(cfg_path.read_text()))
        head.load_state_dict(load_file(str(weights_path)))
    except (TypeError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"cannot load the {name} from {directory}: {exc}") from exc
    return head

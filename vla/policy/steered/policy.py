"""A frozen flow policy plus a steering actor, deployed as one checkpoint (`vla rl --algo noise|residual|zprl`).

`vla eval`, `vla serve-ros` and `vla serve-policy` run it like any policy: predict_action_chunk(batch,
noise) returns the chunk the base policy produces under the actor's deterministic steering. The base's
parameters stay frozen; with steering a = 0 (residual, zprl) the chunk is the base policy's, bit for bit.

Checkpoint layout (written to a temporary directory, then renamed):
    config.json          {"type": "steered", "space": ..., "scale": ..., "actor_hidden": [...], ...}
    base/                the frozen base policy's own checkpoint
    actor.safetensors    the steering actor's weights
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from vla.policy.checkpoint import CONFIG_FILE, CheckpointError, atomic_directory_write, load_tensors
from vla.policy.flow_matching_policy import ChunkedActions
from vla.policy.steered.actor import SteeringActor
from vla.policy.steered.spaces import SPACES, make_space

STEERED_TYPE = "steered"
BASE_DIR, ACTOR_FILE = "base", "actor.safetensors"


class SteeredPolicy(ChunkedActions, nn.Module):
    checkpoint_type = STEERED_TYPE

    def __init__(self, base: nn.Module, space: str, scale: float, actor: SteeringActor):
        super().__init__()
        self.base = base.eval().requires_grad_(False)
        self.space = make_space(space, base, scale)
        if actor.feature_dim != self.space.feature_dim or actor.action_dim != self.space.dim:
            raise CheckpointError(f"steering actor maps {actor.feature_dim} -> {actor.action_dim} values, but the "
                                  f"{space} space of this base policy needs {self.space.feature_dim} -> {self.space.dim}")
        self.actor = actor
        self._action_queue: deque[torch.Tensor] = deque()

    @property
    def config(self):
        return self.base.config

    @property
    def normalizer(self):
        return self.base.normalizer

    @property
    def device(self) -> torch.device:
        return self.base.device

    @torch.no_grad()
    def steering(self, batch: dict) -> torch.Tensor:
        """The actor's deterministic steering a [B, dim] in (-1, 1)."""
        return self.actor(self.space.actor_features(batch))

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Un-normalised executed actions [B, n_action_steps, A]: the steered part of the chunk only.
        `noise` is the base policy's flow noise where the space leaves it to the base (residual, zprl)."""
        c = self.config
        observed = self.space.observe(batch)  # the base encodes the observation once for actor and chunk
        a = self.actor(observed.features)
        if noise is None:
            noise = torch.randn(a.shape[0], c.chunk_size, c.model_action_dim)
        return self.space.chunk(observed, a, noise.to(self.device).float())

    def save_pretrained(self, directory) -> Path:
        def write(tmp: Path) -> None:
            self.base.save_pretrained(tmp / BASE_DIR)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.actor.state_dict().items()},
                      str(tmp / ACTOR_FILE))
            meta = {"type": STEERED_TYPE, "space": self.space.name, "scale": self.space.scale,
                    "actor_hidden": self.actor.hidden, "feature_dim": self.actor.feature_dim,
                    "action_dim": self.actor.action_dim}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))

        return atomic_directory_write(Path(directory), write)

    @classmethod
    def load_checkpoint(cls, directory: Path, data: dict, map_location="cpu", load_base=None) -> "SteeredPolicy":
        """The steered policy of a checkpoint whose config.json (without "type") is `data`; load_base
        (the registry's load_policy, passed in so no policy type imports the registry) loads base/."""
        try:
            space, scale, hidden = data["space"], float(data["scale"]), [int(h) for h in data["actor_hidden"]]
            feature_dim, action_dim = int(data["feature_dim"]), int(data["action_dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{directory / CONFIG_FILE}: not a steered-policy config ({exc!r})") from exc
        if space not in SPACES:
            raise CheckpointError(f"{directory / CONFIG_FILE}: space {space!r} is not one of {SPACES}")
        base = load_base(directory / BASE_DIR, map_location=map_location)
        actor = SteeringActor(feature_dim, action_dim, hidden)
        path = directory / ACTOR_FILE
        if not path.is_file():
            raise CheckpointError(f"steered policy {directory} has no {ACTOR_FILE}")
        try:
            actor.load_state_dict(load_tensors(path, "steering actor"))  # strict: names and shapes must match
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not match {directory / CONFIG_FILE}: {exc}") from exc
        return cls(base, space, scale, actor).to(map_location).eval()

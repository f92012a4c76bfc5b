"""State and action normalisation from dataset statistics.

The statistics travel with the policy as buffers and are saved beside the
weights; a policy never runs on un-normalised inputs (from_pretrained refuses a
checkpoint without them).
"""

from __future__ import annotations

import torch
from torch import nn

NORMALIZED_KEYS = ("observation.state", "action")


class Normalizer(nn.Module):
    def __init__(self, dims: dict[str, int], mode: str = "mean_std", eps: float = 1e-6):
        super().__init__()
        self.mode, self.eps = mode, eps
        self.keys = list(dims)
        for key, dim in dims.items():
            for stat, fill in (("mean", 0.0), ("std", 1.0), ("min", -1.0), ("max", 1.0)):
                self.register_buffer(self._name(key, stat), torch.full((dim,), fill))
        self.register_buffer("loaded", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def _name(key: str, stat: str) -> str:
        return f"{key.replace('.', '_')}__{stat}"

    def stat(self, key: str, stat: str) -> torch.Tensor:
        return getattr(self, self._name(key, stat))

    def load_stats(self, stats: dict[str, dict]) -> None:
        """stats: {feature: {"mean": array, "std": array, "min": array, "max": array, ...}} (lerobot's stats.json)."""
        for key in self.keys:
            if key not in stats:
                raise ValueError(f"normalisation stats have no entry for {key!r} (have {sorted(stats)})")
            for stat in ("mean", "std", "min", "max"):
                value = torch.as_tensor(stats[key][stat], dtype=torch.float32).flatten()
                buf = self.stat(key, stat)
                if value.shape != buf.shape:
                    raise ValueError(f"normalisation stats {key}/{stat} have shape {tuple(value.shape)}, the policy expects {tuple(buf.shape)}")
                buf.copy_(value)
        self.loaded.fill_(True)

    def state_dict_stats(self) -> dict[str, torch.Tensor]:
        return {f"{key}/{stat}": self.stat(key, stat).detach().clone()
                for key in self.keys for stat in ("mean", "std", "min", "max")}

    def _check(self) -> None:
        if not bool(self.loaded):
            raise RuntimeError("the policy has no normalisation statistics: load them from the dataset (Normalizer.load_stats) before use")

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        self._check()
        if self.mode == "mean_std":
            return (x - self.stat(key, "mean")) / (self.stat(key, "std") + self.eps)
        lo, hi = self.stat(key, "min"), self.stat(key, "max")
        return 2 * (x - lo) / (hi - lo + self.eps) - 1

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        self._check()
        if self.mode == "mean_std":
            return x * (self.stat(key, "std") + self.eps) + self.stat(key, "mean")
        lo, hi = self.stat(key, "min"), self.stat(key, "max")
        return (x + 1) / 2 * (hi - lo + self.eps) + lo

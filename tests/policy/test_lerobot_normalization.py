"""lerobot's per-feature normalisation modes, mixed ones included (MEAN_STD state, MIN_MAX actions)."""

from pathlib import Path

import pytest
import torch

from vla.policy.checkpoint import CheckpointError
from vla.policy.foreign.lerobot_metadata import ACTION, STATE, normalization
from vla.policy.normalize import Normalizer

EPS = 1e-8


def stats(dim: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    lo = -1 - torch.rand(dim, generator=g)
    hi = 1 + torch.rand(dim, generator=g)
    return {"mean": torch.randn(dim, generator=g), "std": 0.5 + torch.rand(dim, generator=g), "min": lo, "max": hi,
            "q01": lo * 0.9, "q99": hi * 0.9}


def lerobot_reference(x: torch.Tensor, mode: str, s: dict) -> torch.Tensor:
    """What lerobot's normaliser computes (our formulas with the same eps)."""
    if mode == "MEAN_STD":
        return (x - s["mean"]) / (s["std"] + EPS)
    lo, hi = (s["min"], s["max"]) if mode == "MIN_MAX" else (s["q01"], s["q99"])
    return 2 * (x - lo) / (hi - lo + EPS) - 1


@pytest.mark.parametrize("state_mode,action_mode", [("MEAN_STD", "MIN_MAX"), ("MIN_MAX", "MEAN_STD"),
                                                    ("MEAN_STD", "QUANTILES"), ("MIN_MAX", "MIN_MAX"),
                                                    ("MEAN_STD", "MEAN_STD")])
def test_each_feature_keeps_its_own_mode(state_mode, action_mode):
    raw = {STATE: stats(5, 0), ACTION: stats(3, 1)}
    mode, ours = normalization({"STATE": state_mode, "ACTION": action_mode}, raw, Path("ckpt"), 5, 3, EPS)
    normalizer = Normalizer({STATE: 5, ACTION: 3}, mode, eps=EPS)
    normalizer.load_stats(ours)
    for feature, feature_mode, dim in ((STATE, state_mode, 5), (ACTION, action_mode, 3)):
        x = 3 * torch.randn(64, dim, generator=torch.Generator().manual_seed(2))
        expected = lerobot_reference(x, feature_mode, raw[feature])
        torch.testing.assert_close(normalizer.normalize(feature, x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(normalizer.unnormalize(feature, expected), x, rtol=1e-5, atol=1e-5)


def test_unknown_mode_and_missing_statistics_are_refused():
    raw = {STATE: stats(5, 0), ACTION: stats(3, 1)}
    with pytest.raises(CheckpointError, match="normalisation mode 'LOG' is not supported"):
        normalization({"ACTION": "LOG"}, raw, Path("ckpt"), 5, 3)
    del raw[ACTION]["min"]
    with pytest.raises(CheckpointError, match=r"no normalisation statistics \['min'\] for 'action' \(MIN_MAX\)"):
        normalization({"ACTION": "MIN_MAX"}, raw, Path("ckpt"), 5, 3)

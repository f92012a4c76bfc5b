"""What a lerobot checkpoint says besides its weights, read the same way for pi0 / pi0.5
(pretrained.py) and SmolVLA (smolvla_load.py): the features in config.json,
the normalisation mode and statistics from the processor files, the prompt length from the
tokenizer step."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from vla.policy.checkpoint import CONFIG_FILE, CheckpointError

STATE, ACTION = "observation.state", "action"
IMAGES = "observation.images."
# lerobot's processor files (PolicyProcessorPipeline.save_pretrained) and their normaliser steps' registry
# names; read here and written by lerobot_processors.py.
PREPROCESSOR, POSTPROCESSOR = "policy_preprocessor", "policy_postprocessor"
NORMALIZER, UNNORMALIZER = "normalizer_processor", "unnormalizer_processor"


def lerobot_features(directory: Path, raw: dict) -> tuple[list[str], int, int]:
    """(cameras, state_dim, action_dim) from config.json's features; cameras include the empty slots
    (`empty_cameras`) the checkpoint fills with masked black images."""
    features = raw.get("input_features", {})
    if STATE not in features or ACTION not in raw.get("output_features", {}):
        raise CheckpointError(f"{directory / CONFIG_FILE}: input_features needs {STATE!r} and output_features {ACTION!r}")
    cameras = [k[len(IMAGES):] for k, v in features.items() if v.get("type") == "VISUAL"]
    cameras += [f"empty_camera_{i}" for i in range(int(raw.get("empty_cameras", 0)))
                if f"{IMAGES}empty_camera_{i}" not in features]
    return cameras, int(features[STATE]["shape"][0]), int(raw["output_features"][ACTION]["shape"][0])


def lerobot_normalization(directory: Path, raw: dict, state_dim: int, action_dim: int) -> tuple[str, dict, float]:
    """Our (mode, stats, eps) from the processor files; a checkpoint without statistics is refused."""
    stats, norm_step = lerobot_stats(directory)
    if not stats:
        raise CheckpointError(f"{directory}: no normalisation statistics (policy_preprocessor.json with a "
                              "normalizer_processor step and its safetensors); a policy never runs un-normalised")
    eps = float(norm_step.get("eps", 1e-8))
    mode, our_stats = normalization(raw.get("normalization_mapping", {}), stats, directory, state_dim, action_dim, eps)
    return mode, our_stats, eps


def prompt_length(directory: Path, raw: dict) -> int:
    """The tokenizer step's max_length (config.json's tokenizer_max_length, else 48, when it has none)."""
    return int(tokenizer_step(directory).get("max_length", raw.get("tokenizer_max_length", 48)))


def lerobot_stats(directory: Path) -> tuple[dict, dict]:
    """(stats {feature: {stat: tensor}}, normaliser step config) from lerobot's processor files."""
    stats, step_cfg = {}, None
    for pipeline, registry in ((PREPROCESSOR, NORMALIZER), (POSTPROCESSOR, UNNORMALIZER)):
        path = directory / f"{pipeline}.json"
        if not path.is_file():
            continue
        for step in json.loads(path.read_text()).get("steps", []):
            if step.get("registry_name") == registry and step.get("state_file"):
                step_cfg = step_cfg or step.get("config", {})
                state_file = directory / step["state_file"]
                if not state_file.is_file():
                    raise CheckpointError(f"{path} names normalisation stats {state_file.name}, which is missing")
                with safe_open(str(state_file), "pt") as f:
                    for key in f.keys():
                        feature, _, stat = key.rpartition(".")
                        stats.setdefault(feature, {})[stat] = f.get_tensor(key)
    return stats, step_cfg or {}


def tokenizer_step(directory: Path) -> dict:
    path = directory / f"{PREPROCESSOR}.json"
    if path.is_file():
        for step in json.loads(path.read_text()).get("steps", []):
            if step.get("registry_name") == "tokenizer_processor":
                return step.get("config", {})
    return {}


NEEDS = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
         "QUANTILE10": ("q10", "q90"), "IDENTITY": ()}


def normalization(mapping: dict, stats: dict, directory: Path, state_dim: int, action_dim: int,
                  eps: float = 1e-8) -> tuple[str, dict]:
    """Our (mode, stats) for lerobot's per-feature-type modes; QUANTILES is min_max over (q01, q99).

    lerobot lets state and action use different modes; our Normalizer has one. Where they differ,
    the range-type feature (MIN_MAX, QUANTILES) is written as the mean-std affine map it is:
    2 (x - lo) / (hi - lo + eps) - 1 = (x - m) / (s + eps) with s = (hi - lo + eps) / 2 - eps and
    m = lo + (hi - lo + eps) / 2, exact up to float rounding."""
    modes = {STATE: mapping.get("STATE", "MEAN_STD"), ACTION: mapping.get("ACTION", "MEAN_STD")}
    for mode in modes.values():
        if mode not in NEEDS:
            raise CheckpointError(f"{directory}: normalisation mode {mode!r} is not supported")
    kind = {f: "mean_std" if m in ("MEAN_STD", "IDENTITY") else "min_max" for f, m in modes.items()}
    ours = kind[ACTION] if kind[STATE] == kind[ACTION] else "mean_std"
    out = {}
    for feature, dim in ((STATE, state_dim), (ACTION, action_dim)):
        mode, have = modes[feature], stats.get(feature, {})
        absent = [s for s in NEEDS[mode] if s not in have]
        if absent:
            raise CheckpointError(
                f"{directory}: no normalisation statistics {absent} for {feature!r} ({mode}); the checkpoint's "
                "processor files (policy_preprocessor.json + its normalizer safetensors) must carry them. "
                "A policy never runs un-normalised")
        zeros, ones = torch.zeros(dim), torch.ones(dim)
        if mode == "MEAN_STD":
            out[feature] = {"mean": have["mean"], "std": have["std"], "min": -ones, "max": ones}
        elif mode == "IDENTITY":
            out[feature] = {"mean": zeros, "std": ones, "min": -ones, "max": ones}
        elif ours == "min_max":
            lo, hi = NEEDS[mode]
            out[feature] = {"mean": zeros, "std": ones, "min": have[lo], "max": have[hi]}
        else:  # a range mode beside a mean-std one: its exact affine equivalent
            lo, hi = (have[k].double() for k in NEEDS[mode])
            half = (hi - lo + eps) / 2
            out[feature] = {"mean": (lo + half).float(), "std": (half - eps).float(), "min": -ones, "max": ones}
    return ours, out

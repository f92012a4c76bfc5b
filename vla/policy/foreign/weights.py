"""Copying a published checkpoint's tensors into one of our policies, shared by the pi0 / pi0.5
(pretrained.py) and SmolVLA (smolvla_load.py) loaders: the safetensors header (names and shapes,
read before any compute), the strict copy through a {published: ours} name mapping, and the
policy built on the meta device around it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from vla.policy.checkpoint import CheckpointError


def weights_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from the safetensors header; a truncated file is refused here, before any compute."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: weights file {path.name} is missing")
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc
    return shapes


def _target_shape(name: str, expected: dict[str, torch.Size], shape: tuple[int, ...]) -> tuple[int, ...]:
    # pi0.5's final expert norm carries a residual gate it never uses; we keep scale and shift only.
    if name.startswith("transformer.expert.norm.dense.") and shape[0] == 3 * expected[name][0] // 2:
        return tuple(expected[name])
    return shape


def load_weights(policy, path: Path, mapping: dict[str, str], unexpected: list[str], allow_partial: bool,
                 dtype: torch.dtype) -> list[str]:
    """Copy the mapped tensors in one at a time (peak memory: the model plus one tensor); returns names left at init."""
    expected = {k: v.shape for k, v in policy.state_dict().items() if not k.startswith("normalizer.")}
    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in mapping}
    mismatched = sorted(f"{src} -> {dst}: checkpoint {shapes[src]} vs model {tuple(expected[dst])}"
                        for src, dst in mapping.items()
                        if dst in expected and _target_shape(dst, expected, shapes[src]) != tuple(expected[dst]))
    unknown = sorted(f"{src} -> {dst}" for src, dst in mapping.items() if dst not in expected)
    missing = sorted(set(expected) - set(mapping.values()))
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected or unknown:
        problems.append(f"unexpected {unexpected + unknown}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched}")
    if problems and not allow_partial:
        raise CheckpointError(f"{path} does not match the model it describes: " + "; ".join(problems)
                              + " (allow_partial=True loads what matches)")
    modules = dict(policy.named_modules())
    bad = {m.split(" ->")[0] for m in mismatched} | {u.split(" ->")[0] for u in unknown}
    with safe_open(str(path), "pt") as f, torch.no_grad():
        for src, dst in mapping.items():
            if src in bad:
                continue
            tensor = f.get_tensor(src)
            if dst.startswith("transformer.expert.norm.dense."):
                tensor = tensor[: expected[dst][0]]
            owner, _, leaf = dst.rpartition(".")
            # A new Parameter rather than copy_: the model may live on the meta device.
            setattr(modules[owner], leaf, torch.nn.Parameter(tensor.to(dtype).contiguous()))
    left = sorted(missing + [m.split(" -> ")[1].split(":")[0] for m in mismatched])
    if problems:
        print(f"allow_partial: {len(left)} tensors left at random init: {left}; ignored from the checkpoint: "
              f"{unexpected + unknown}")
    return left


def build_policy(policy_cls, config, stats: dict, weights: Path, mapping: dict[str, str], unexpected: list[str],
                 allow_partial: bool, dtype: str):
    """policy_cls(config) in dtype with the mapped weights and the statistics loaded, in eval mode."""
    config.dtype = dtype
    torch_dtype = getattr(torch, dtype)
    if allow_partial:
        policy = policy_cls(config).to(torch_dtype)  # what is not in the checkpoint keeps a real random init
    else:
        # Built on the meta device: a 3B model is never materialised twice (random init, then weights).
        with torch.device("meta"):
            policy = policy_cls(config)
    load_weights(policy, weights, mapping, unexpected, allow_partial, torch_dtype)
    policy.materialize_buffers()
    policy.normalizer.load_stats(stats)
    return policy.eval()

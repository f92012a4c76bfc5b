"""Reading published tensor names, shared by the pi0 / pi0.5 (pi0_names.py, pretrained.py) and
SmolVLA (smolvla_names.py, smolvla_load.py) loaders: renaming by rules, counting layers, the
tensors a model cannot be sized without, and the {published: ours} mapping of a whole file."""

from __future__ import annotations

import re
from typing import Callable, Iterable

from vla.policy.checkpoint import CheckpointError


def rename(key: str, rules, unused: Iterable[re.Pattern] = ()) -> str | None:
    """key rewritten by the first (pattern, replacement) rule it matches whole; None for a name in
    unused (held by the reference, never used for actions); KeyError for a name neither knows."""
    if any(p.fullmatch(key) for p in unused):
        return None
    for pattern, repl in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    raise KeyError(key)


def count_layers(shapes, prefix: str) -> int:
    """How many `prefix<i>.` layers the names hold (the highest index + 1)."""
    ids = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(ids) + 1 if ids else 0


def require_tensors(shapes, names: list[str], model: str) -> None:
    """Refuse weights that lack a tensor the model's sizes are read from."""
    missing = [k for k in names if k not in shapes]
    if missing:
        raise CheckpointError(f"weights lack the tensors that define a {model} model: {missing}")


def map_names(shapes, to_ours: Callable[[str], str | None]) -> tuple[dict[str, str], list[str]]:
    """{published name: our name} for the tensors to load, and the published names to_ours does not
    know (KeyError). A name it maps to None is skipped; of two names for one tensor (a tied head and
    its embedding) the first is loaded."""
    mapping, unexpected = {}, []
    for key in shapes:
        try:
            ours = to_ours(key)
        except KeyError:
            unexpected.append(key)
            continue
        if ours is not None and ours not in mapping.values():
            mapping[key] = ours
    return mapping, sorted(unexpected)

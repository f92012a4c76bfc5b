"""Published tensor names, shared by the pi0 / pi0.5 (pi0_names.py, pretrained.py) and SmolVLA
(smolvla_names.py, smolvla_load.py) loaders and the lerobot exporter (lerobot_export.py): the name
table read both ways, counting layers, the tensors a model cannot be sized without, and the
{published: ours} mapping of a whole file."""

from __future__ import annotations

import re
from typing import Callable, Iterable

from vla.policy.checkpoint import CheckpointError


class NameMap:
    """One table of (published template, our template) pairs, read both ways: loading renames
    published names to ours, exporting (vla/policy/foreign/lerobot_export.py) ours to published.

    A template is a name with `{group}` fields, each matching groups[group] (default: anything);
    the first pair that matches a name whole wins. Several published names may share one of ours
    (a tied head and its embedding): published_names gives them all, in table order."""

    def __init__(self, pairs, groups: dict[str, str] | None = None):
        self.pairs = tuple(pairs)
        self.groups = groups or {}
        self._published = [self._compile(published) for published, _ in self.pairs]
        self._ours = [self._compile(ours) for _, ours in self.pairs]

    def _compile(self, template: str) -> re.Pattern:
        parts = re.split(r"\{(\w+)\}", template)  # literal, group, literal, group, ...
        return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{self.groups.get(p, '.+')})"
                                  for i, p in enumerate(parts)))

    def to_ours(self, key: str, unused: Iterable[re.Pattern] = ()) -> str | None:
        """Our name for a published one; None for a name in unused (held by the reference, never used
        for actions); KeyError for a name the table does not know."""
        if any(p.fullmatch(key) for p in unused):
            return None
        for pattern, (_, ours) in zip(self._published, self.pairs):
            if m := pattern.fullmatch(key):
                return ours.format(**m.groupdict())
        raise KeyError(key)

    def published_names(self, name: str) -> list[str]:
        """Every published name of one of our parameters (empty when the table does not know it)."""
        return [published.format(**m.groupdict()) for pattern, (published, _) in zip(self._ours, self.pairs)
                if (m := pattern.fullmatch(name))]


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

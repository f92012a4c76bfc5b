"""Scripted experts by task name (privileged state in, action out)."""

from __future__ import annotations

from typing import Callable

from .expert_lift import LiftExpert
from .expert_pick_place import PickPlaceCanExpert, StackExpert

EXPERTS: dict[str, Callable[..., object]] = {
    "lift": LiftExpert,
    "pick_place_can": PickPlaceCanExpert,
    "stack": StackExpert,
}


def make_expert(task: str, noise_std: float = 0.0, seed: int | None = None):
    """The scripted expert for `task`; ValueError listing the tasks that have one."""
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; tasks with experts: {sorted(EXPERTS)}")
    return EXPERTS[task](noise_std=noise_std, seed=seed)

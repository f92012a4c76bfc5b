"""Scripted experts by task name (privileged state in, action out)."""

from __future__ import annotations

from typing import Callable

from .expert_door import DoorExpert
from .expert_libero import LiberoPickPlaceExpert
from .expert_libero_task import LiberoTaskExpert
from .expert_lift import LiftExpert
from .expert_nut_assembly import NutAssemblySquareExpert
from .expert_pick_place import PickPlaceCanExpert, StackExpert
from .libero_env import base_suite

EXPERTS: dict[str, Callable[..., object]] = {
    "door": DoorExpert,
    "lift": LiftExpert,
    "nut_assembly_square": NutAssemblySquareExpert,
    "pick_place_can": PickPlaceCanExpert,
    "stack": StackExpert,
}
# LIBERO suites with an expert: "<suite>/<task>" gets it, and so do the tasks of their LIBERO-PRO variants
# ("libero_spatial_lan/0"). Every spatial and object task is one pick-and-place (On/In) goal; goal and
# libero_10 tasks also open, close and turn on things, and have up to three goals (LiberoTaskExpert).
LIBERO_EXPERT_SUITES: dict[str, Callable[..., object]] = {
    "libero_spatial": LiberoPickPlaceExpert,
    "libero_object": LiberoPickPlaceExpert,
    "libero_goal": LiberoTaskExpert,
    "libero_10": LiberoTaskExpert,
}


def libero_expert_suite(suite: str) -> str | None:
    """The suite in LIBERO_EXPERT_SUITES that ``suite`` is or perturbs (LIBERO-PRO variants), else None."""
    base = base_suite(suite)
    return base if base in LIBERO_EXPERT_SUITES else None


def make_expert(task: str, noise_std: float = 0.0, seed: int | None = None):
    """The scripted expert for `task`; ValueError listing the tasks that have one."""
    if isinstance(task, str) and "/" in task:
        suite = libero_expert_suite(task.split("/", 1)[0])
        if suite is not None:
            return LIBERO_EXPERT_SUITES[suite](noise_std=noise_std, seed=seed)
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; tasks with experts: {sorted(EXPERTS)} "
                         f"and '<suite>/<task>' of the LIBERO suites {sorted(LIBERO_EXPERT_SUITES)}")
    return EXPERTS[task](noise_std=noise_std, seed=seed)

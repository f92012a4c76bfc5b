"""One constructor for every simulated task: robosuite tasks and LIBERO suites' tasks."""

from __future__ import annotations

from typing import Any

from .libero_env import LiberoEnv
from .robosuite_env import RobosuiteEnv


def make_env(task: str = "lift", **kwargs: Any) -> RobosuiteEnv:
    """A ``RobosuiteEnv`` for ``task`` (see ``list_tasks()``), or a ``LiberoEnv``
    for ``"<libero suite>/<task index or name>"`` (see ``list_libero_suites()``)."""
    if isinstance(task, str) and "/" in task:
        return LiberoEnv(task=task, **kwargs)
    return RobosuiteEnv(task=task, **kwargs)

"""Simulation: robosuite tasks as gymnasium envs, cheap rendering, scripted experts, vector envs."""

import os

# mujoco chooses its OpenGL backend when first imported; EGL renders headless
# (on CPU through Mesa llvmpipe, or on a GPU). Users may still pick osmesa.
os.environ.setdefault("MUJOCO_GL", "egl")

from .render import CameraRenderer, RenderBackendError  # noqa: E402  (after MUJOCO_GL)
from .tasks import TASKS, TaskSpec, get_task, list_tasks  # noqa: E402
from .robosuite_env import RobosuiteEnv  # noqa: E402
from .expert_lift import LiftExpert  # noqa: E402
from .expert_pick_place import PickPlaceCanExpert, PickPlaceExpert, StackExpert  # noqa: E402
from .experts import EXPERTS, make_expert  # noqa: E402
from .vector_env import VectorEnv, VectorEnvError  # noqa: E402
from .libero_env import (  # noqa: E402  (imports LIBERO itself only on first use)
    SUITE_MAX_STEPS,
    LiberoEnv,
    get_libero_task,
    list_libero_suites,
    list_libero_tasks,
)
from .make_env import make_env  # noqa: E402

__all__ = [
    "CameraRenderer",
    "EXPERTS",
    "LiberoEnv",
    "LiftExpert",
    "make_expert",
    "PickPlaceCanExpert",
    "PickPlaceExpert",
    "StackExpert",
    "RenderBackendError",
    "RobosuiteEnv",
    "SUITE_MAX_STEPS",
    "TASKS",
    "TaskSpec",
    "VectorEnv",
    "VectorEnvError",
    "get_libero_task",
    "get_task",
    "list_libero_suites",
    "list_libero_tasks",
    "list_tasks",
    "make_env",
]

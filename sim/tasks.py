"""Registry of simulated tasks: which robosuite env, which instruction.

Adding a task is one entry in ``TASKS``. For example (not registered yet,
each needs its own expert and a check of its object observables):

    "stack": TaskSpec("stack", "Stack", "stack the red cube on the green cube",
                      object_obs_keys=("cubeA_pos", "cubeA_quat", "cubeB_pos", "cubeB_quat")),
    "pick_place_can": TaskSpec("pick_place_can", "PickPlaceCan", "put the can in its bin",
                               object_obs_keys=("Can_pos", "Can_quat")),
    "door": TaskSpec("door", "Door", "open the door",
                     object_obs_keys=("door_pos", "handle_pos", "hinge_qpos")),
    "nut_assembly_square": TaskSpec("nut_assembly_square", "NutAssemblySquare",
                                    "put the square nut on the square peg",
                                    object_obs_keys=("SquareNut_pos", "SquareNut_quat")),
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class TaskSpec:
    """One task: a robosuite environment plus its language instruction.

    ``object_obs_keys`` are robosuite observation keys copied into
    ``RobosuiteEnv.privileged_state()`` for scripted experts.
    """

    name: str
    env_name: str
    instruction: str
    object_obs_keys: tuple[str, ...]
    robot: str = "Panda"
    env_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


TASKS: Mapping[str, TaskSpec] = MappingProxyType(
    {
        "lift": TaskSpec(
            name="lift",
            env_name="Lift",
            instruction="lift the red cube",
            object_obs_keys=("cube_pos", "cube_quat"),
        ),
    }
)


def list_tasks() -> list[str]:
    """Names accepted by ``make_env`` / ``RobosuiteEnv(task=...)``."""
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """The spec for ``name``; ValueError listing the valid names otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}") from None

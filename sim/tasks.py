"""Registry of simulated tasks: which robosuite env, which instruction.

Adding a task is one entry in ``TASKS``: the robosuite env name, the
instruction, the robosuite observation keys of its objects, and optionally a
function giving privileged quantities that are not observations (a goal
position) for scripted experts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class TaskSpec:
    """One task: a robosuite environment plus its language instruction.

    ``object_obs_keys`` are robosuite observation keys copied into
    ``RobosuiteEnv.privileged_state()`` for scripted experts; ``privileged_extras``
    maps the robosuite env to further entries of it (goal poses).
    """

    name: str
    env_name: str
    instruction: str
    object_obs_keys: tuple[str, ...]
    robot: str = "Panda"
    env_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    privileged_extras: Callable[[Any], dict[str, np.ndarray]] | None = None


def _can_goal(env: Any) -> dict[str, np.ndarray]:
    # The can counts as placed inside one quarter of the second bin; this is its centre, on the bin floor.
    return {"target_pos": np.array(env.target_bin_placements[env.object_id], dtype=np.float64)}


def _square_peg(env: Any) -> dict[str, np.ndarray]:
    # robosuite's square nut goes on peg1 (the round nut on peg2).
    return {"peg_pos": np.array(env.sim.data.body_xpos[env.peg1_body_id], dtype=np.float64)}


TASKS: Mapping[str, TaskSpec] = MappingProxyType(
    {
        "lift": TaskSpec(
            name="lift",
            env_name="Lift",
            instruction="lift the red cube",
            object_obs_keys=("cube_pos", "cube_quat"),
        ),
        "stack": TaskSpec(
            name="stack",
            env_name="Stack",
            instruction="stack the red cube on the green cube",
            object_obs_keys=("cubeA_pos", "cubeA_quat", "cubeB_pos", "cubeB_quat"),
        ),
        "pick_place_can": TaskSpec(
            name="pick_place_can",
            env_name="PickPlaceCan",
            instruction="put the can in the bin",
            object_obs_keys=("Can_pos", "Can_quat"),
            privileged_extras=_can_goal,
        ),
        "nut_assembly_square": TaskSpec(
            name="nut_assembly_square",
            env_name="NutAssemblySquare",
            instruction="put the square nut on the square peg",
            object_obs_keys=("SquareNut_pos", "SquareNut_quat"),
            privileged_extras=_square_peg,
        ),
        "door": TaskSpec(
            name="door",
            env_name="Door",
            instruction="open the door",
            object_obs_keys=("door_pos", "handle_pos", "hinge_qpos", "handle_qpos"),
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

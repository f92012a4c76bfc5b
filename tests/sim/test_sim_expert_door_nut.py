"""Door and NutAssemblySquare experts: each solves a seeded episode within the default step limit."""

import numpy as np
import pytest

from tests.sim.conftest import run_expert_episode
from vla.sim import RobosuiteEnv, make_expert
from vla.sim.expert_door import DoorExpert, Phase as DoorPhase
from vla.sim.expert_nut_assembly import NutAssemblySquareExpert, square_yaw


def _run(task, seed, max_steps=200):
    env = RobosuiteEnv(task=task, cameras=("agentview",), image_size=16, max_episode_steps=max_steps)
    try:
        expert = make_expert(task)
        env.reset(seed=seed)
        expert.reset()
        success, _, phases = run_expert_episode(env, expert, max_steps)
        return expert, success, phases
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_door_expert_presses_the_lever_then_pulls_the_door_open():
    expert, success, phases = _run("door", seed=0)
    assert type(expert) is DoorExpert
    assert success, [p.value for p in phases]
    assert phases == [DoorPhase.APPROACH, DoorPhase.DESCEND, DoorPhase.GRASP, DoorPhase.PRESS, DoorPhase.PULL]


@pytest.mark.timeout(60)
def test_nut_expert_puts_the_square_nut_on_its_peg():
    expert, success, phases = _run("nut_assembly_square", seed=0)
    assert type(expert) is NutAssemblySquareExpert
    assert success, [p.value for p in phases]


def test_nut_goal_yaw_is_square_at_most_a_quarter_turn_away_and_handle_toward_the_robot():
    for nut_yaw in np.linspace(-np.pi, np.pi, 37):
        goal = square_yaw(nut_yaw)
        assert abs(np.sin(2 * goal)) < 1e-9  # a multiple of a quarter turn
        assert abs(goal - nut_yaw) <= np.pi / 2 + 1e-9
    assert abs(np.cos(square_yaw(np.pi - 0.2)) + 1) < 1e-9  # handle already toward -x: keep it there
    assert abs(np.cos(square_yaw(np.pi / 2 + 0.3)) + 1) < 1e-9  # a quarter turn brings it there
    # Toward +x (out of reach over the peg): a half turn is too far, so sideways, the nearer way.
    assert square_yaw(0.2) == pytest.approx(np.pi / 2)

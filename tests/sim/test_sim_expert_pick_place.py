"""Pick-and-place experts (PickPlaceCan, Stack): succeed within the default step limit, through every phase."""

import numpy as np
import pytest

from tests.sim.conftest import run_expert_episode
from vla.sim import PickPlaceCanExpert, RobosuiteEnv, StackExpert, make_expert
from vla.sim.expert_pick_place import Phase


def _run_episode(env, expert, seed, max_steps=200):
    env.reset(seed=seed)
    expert.reset()
    return run_expert_episode(env, expert, max_steps)


@pytest.mark.parametrize("task, expert_cls", [("stack", StackExpert), ("pick_place_can", PickPlaceCanExpert)])
def test_expert_places_the_object(task, expert_cls):
    env = RobosuiteEnv(task=task, cameras=("agentview",), image_size=16, max_episode_steps=200)
    try:
        expert = make_expert(task, noise_std=0.0)
        assert type(expert) is expert_cls
        success, steps, phases = _run_episode(env, expert, seed=0)
        assert success, f"{task}: no success within {steps} steps; phases {[p.value for p in phases]}"
        # Success needs the object let go of: it comes only after the fingers opened.
        assert phases[:6] == [Phase.APPROACH, Phase.DESCEND, Phase.GRASP, Phase.LIFT, Phase.CARRY, Phase.LOWER]
        assert Phase.RELEASE in phases

        # Noise is seeded and spares the gripper.
        env.reset(seed=1)
        state = env.privileged_state()
        clean = expert_cls().act(state)
        noisy = [expert_cls(noise_std=0.05, seed=4).act(state) for _ in range(2)]
        np.testing.assert_array_equal(noisy[0], noisy[1])
        assert not np.allclose(noisy[0][:6], clean[:6]) and noisy[0][6] == clean[6] == -1.0
    finally:
        env.close()


def test_negative_noise_rejected_and_unknown_task_lists_experts():
    with pytest.raises(ValueError, match="noise_std"):
        StackExpert(noise_std=-1.0)
    with pytest.raises(ValueError, match=r"open_fridge.*\['door', 'lift', 'nut_assembly_square', 'pick_place_can', 'stack'\]"):
        make_expert("open_fridge")

"""The robosuite tasks beside Lift: each resets, steps, and exposes its instruction and privileged poses."""

import numpy as np
import pytest

from vla.sim import RobosuiteEnv, get_task, list_tasks

NEW_TASKS = ["stack", "pick_place_can", "nut_assembly_square", "door"]


def test_registry_lists_all_tasks():
    assert set(NEW_TASKS) | {"lift"} == set(list_tasks())


@pytest.mark.parametrize("task", NEW_TASKS)
def test_task_resets_steps_and_exposes_privileged_poses(task):
    spec = get_task(task)
    env = RobosuiteEnv(task=task, cameras=("agentview",), image_size=32, max_episode_steps=20)
    try:
        obs, info = env.reset(seed=3)
        assert obs["task"] == spec.instruction and not info["is_success"]
        assert obs["state"].shape == (8,) and np.all(np.isfinite(obs["state"]))
        image = obs["images"]["agentview"]
        assert image.shape == (32, 32, 3) and image.std() > 5  # a scene, not a blank frame
        state = env.privileged_state()
        for key in spec.object_obs_keys + ("eef_pos", "eef_quat", "gripper_qpos"):
            assert key in state and np.all(np.isfinite(state[key])), key
        again = env.reset(seed=3)[0]
        np.testing.assert_array_equal(again["state"], obs["state"])
        for key, value in env.privileged_state().items():
            np.testing.assert_array_equal(value, state[key])

        obs, reward, terminated, truncated, info = env.step_chunk(np.zeros((3, 7), np.float32))
        assert info["steps"] == 3 and not terminated and not truncated and not info["is_success"]
        _check_task_geometry(task, env.privileged_state())
    finally:
        env.close()


def _check_task_geometry(task: str, state: dict) -> None:
    """Poses a scripted expert relies on, where they should be at the start."""
    if task == "stack":
        assert np.linalg.norm(state["cubeA_pos"][:2] - state["cubeB_pos"][:2]) > 0.02
    elif task == "pick_place_can":
        # The can starts in the left bin (y < 0); its goal quarter is in the right bin, on the bin floor.
        assert state["Can_pos"][1] < 0 < state["target_pos"][1]
        assert abs(state["target_pos"][2] - 0.8) < 1e-9
    elif task == "nut_assembly_square":
        assert state["peg_pos"].shape == (3,) and state["peg_pos"][2] > 0.8
        assert np.linalg.norm(state["peg_pos"][:2] - state["SquareNut_pos"][:2]) > 0.05
    elif task == "door":
        assert abs(float(state["hinge_qpos"].ravel()[0])) < 0.05  # closed

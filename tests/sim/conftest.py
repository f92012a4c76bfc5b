"""Shared Lift envs for the sim tests: building one costs seconds (robosuite + renderer)."""

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

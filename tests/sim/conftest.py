"""Shared Lift env for the sim tests: building one costs seconds (robosuite + renderer)."""

import pytest

from vla.sim import RobosuiteEnv


@pytest.fixture(scope="session")
def lift_env():
    env = RobosuiteEnv(task="lift", cameras=("agentview",), image_size=64, max_episode_steps=200)
    yield env
    env.close()

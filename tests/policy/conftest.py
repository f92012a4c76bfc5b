import pytest


@pytest.fixture(scope="module")
def lift_obs():
    """A robosuite Lift env (agentview 64 px) and its first observation (the pretrained Lift tests)."""
    from vla.sim.robosuite_env import RobosuiteEnv

    env = RobosuiteEnv("lift", cameras=("agentview",), image_size=64, max_episode_steps=10, seed=0)
    try:
        obs, _ = env.reset(seed=0)
        yield env, obs
    finally:
        env.close()

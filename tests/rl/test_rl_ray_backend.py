"""The Ray backend under a real Lift rollout of a tiny state policy: same seed, same rollouts as the
local backend, also when a worker is killed mid-collection (replayed, or dropped as infra failures).

One local Ray instance (2 CPUs, no dashboard) serves the module. The end-to-end `vla rl --backend ray`
run is in tests/test_cli_ray_backend.py.
"""

import os
import signal

import pytest
import torch

ray = pytest.importorskip("ray")

from tests.policy.helpers import make_state_policy  # noqa: E402
from vla.sim.ray_connect import start_local  # noqa: E402
from vla.config import EnvConfig  # noqa: E402
from vla.eval.evaluate import env_kwargs_for  # noqa: E402
from vla.rl.rollout import RolloutEngine, SamplingSpec  # noqa: E402
from vla.sim import VectorEnv  # noqa: E402
from vla.sim.ray_vector_env import RayVectorEnv  # noqa: E402

GROUPS, GROUP_SIZE = [11, 12], 2  # 4 episodes in two waves of 2 envs


@pytest.fixture(scope="module")
def ray_instance():
    start_local(ray, num_cpus=2)  # workers at this process's priority, as `vla rl --backend ray` starts them
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def policy_and_env():
    policy = make_state_policy(seed=0).eval()
    env_cfg = EnvConfig()
    env_cfg.max_episode_steps = 16
    return policy, env_kwargs_for(policy, env_cfg)


def collect(policy, vec_env, policy_version=0):
    engine = RolloutEngine(policy, vec_env, SamplingSpec(noise_level=0.5))
    return engine.collect(GROUPS, GROUP_SIZE, torch.Generator().manual_seed(3), policy_version=policy_version)


class KillBeforeStep:
    """Passes calls through to a RayVectorEnv; kills worker 0's process before its n-th step_chunk."""

    def __init__(self, env, n):
        self.env, self.n, self.calls = env, n, 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step_chunk(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            os.kill(self.env._worker_pid(0), signal.SIGKILL)
        return self.env.step_chunk(*args, **kwargs)


def assert_same_rollouts(a, b):
    assert len(a) == len(b) and len(a.trajectories) == len(b.trajectories)
    for name in ("chains", "log_probs", "values", "rewards", "env_rewards", "dones", "traj_ids"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.observations["observation.state"], b.observations["observation.state"])
    for ta, tb in zip(a.trajectories, b.trajectories):
        assert (ta.seed, ta.success, ta.steps, ta.env_reward, ta.decisions) == \
               (tb.seed, tb.success, tb.steps, tb.env_reward, tb.decisions)


@pytest.fixture(scope="module")
def local_rollouts(policy_and_env):
    policy, env_kwargs = policy_and_env
    with VectorEnv(2, env_kwargs) as vec_env:
        return collect(policy, vec_env)


@pytest.fixture(scope="module")
def ray_env(ray_instance, policy_and_env):
    with RayVectorEnv(2, policy_and_env[1], lost_episodes="replay") as vec_env:
        yield vec_env


@pytest.mark.timeout(180)
def test_same_seed_same_rollouts_as_local_and_through_a_killed_worker(ray_env, policy_and_env, local_rollouts):
    policy = policy_and_env[0]
    assert len(local_rollouts.trajectories) == 4 and local_rollouts.env_steps == 4 * 16
    rollouts = collect(policy, ray_env, policy_version=5)
    assert_same_rollouts(rollouts, local_rollouts)
    assert {t.policy_version for t in rollouts.trajectories} == {5}
    # A crash in the middle of the first wave's episodes: Ray restarts the actor, the driver
    # replays the episode on it, and the rollout goes on as if nothing had happened.
    restarts = ray_env.restarts
    assert_same_rollouts(collect(policy, KillBeforeStep(ray_env, n=4)), local_rollouts)
    assert ray_env.restarts == restarts + 1


@pytest.mark.timeout(180)
def test_dropped_episodes_of_a_killed_worker_are_not_counted(ray_env, policy_and_env, local_rollouts, monkeypatch):
    policy = policy_and_env[0]
    monkeypatch.setattr(ray_env, "lost_episodes", "drop")
    restarts = ray_env.restarts
    rollouts = collect(policy, KillBeforeStep(ray_env, n=4))
    assert ray_env.restarts == restarts + 1
    # worker 0 held the first wave's env 0: that episode is gone, not a failure; the rest match
    kept = [t.seed for t in rollouts.trajectories]
    assert len(kept) == 3 and rollouts.env_steps == 3 * 16
    local = [t for t in local_rollouts.trajectories if t.index != 0]
    assert [(t.seed, t.steps, t.env_reward) for t in rollouts.trajectories] == \
           [(t.seed, t.steps, t.env_reward) for t in local]

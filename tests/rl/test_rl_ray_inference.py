"""Policy-holding Ray rollout workers (--ray_inference worker, vla/rl/ray_rollout.py) on a real Lift with a
tiny state policy: the workers' recorded log-probs are the learner's (ratio 1 at the start of the update), a
pushed update reaches every worker bit for bit with its version, the same seed gives the same rollouts, and a
lost worker's episodes are re-run (replay) or dropped, never counted as failures.

One local Ray instance (3 logical CPUs, no dashboard) and one set of 2 rollout workers (one env each) serve the module.
The `vla rl --ray_inference worker` run is in tests/test_cli_ray_inference.py.
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
from vla.rl.ray_rollout import RolloutWorker, WorkerRolloutEngine  # noqa: E402
from vla.rl.rollout import SamplingSpec  # noqa: E402
from vla.rl.staleness import staleness_stats  # noqa: E402
from vla.rl.update import UpdateContext, recompute_log_prob  # noqa: E402
from vla.sim.ray_vector_env import RayVectorEnv  # noqa: E402

GROUPS, GROUP_SIZE = [11, 12], 2  # 4 episodes: 2 per worker, in two waves of its one env
STEPS = 16
SAMPLING = SamplingSpec(noise_level=0.5)


@pytest.fixture(scope="module")
def ray_instance():
    # 3 logical CPUs: the module's 2 rollout workers hold 2 for its life, the refusal test starts a third actor
    start_local(ray, num_cpus=3)  # workers at this process's priority, as `vla rl --backend ray` starts them
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def policy():
    return make_state_policy(seed=0)


@pytest.fixture(scope="module")
def workers(ray_instance, policy):
    env_cfg = EnvConfig()
    env_cfg.max_episode_steps = STEPS
    with RayVectorEnv(2, env_kwargs_for(policy, env_cfg), worker_cls=RolloutWorker, lost_episodes="replay") as env:
        yield env


@pytest.fixture(scope="module")
def engine(workers, policy):
    return WorkerRolloutEngine(policy, workers, SAMPLING, seed=7, version=0)


def recomputed(policy, rollouts, per_row=False):
    """The learner's log-probs of every decision, as the update computes them before its first step."""
    policy.train()
    ctx = UpdateContext(policy, torch.optim.SGD(policy.parameters(), lr=0.0), list(policy.parameters()), SAMPLING,
                        0, torch.Generator().manual_seed(0), logprob_level="action" if per_row else "chunk")
    with torch.no_grad():
        new = recompute_log_prob(ctx, rollouts, torch.arange(len(rollouts)))
    return new.log_prob, new.old_log_prob


def assert_on_policy(policy, rollouts):
    for per_row in (False, True):
        new, old = recomputed(policy, rollouts, per_row)
        assert new.shape == old.shape
        torch.testing.assert_close(torch.exp(new - old), torch.ones_like(new), rtol=0, atol=1e-5)


def assert_same_rollouts(a, b):
    assert len(a) == len(b) and len(a.trajectories) == len(b.trajectories)
    for name in ("chains", "log_probs", "row_log_probs", "values", "rewards", "env_rewards", "dones", "traj_ids"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.observations["observation.state"], b.observations["observation.state"])
    for ta, tb in zip(a.trajectories, b.trajectories):
        assert (ta.index, ta.group, ta.seed, ta.success, ta.steps, ta.env_reward, ta.decisions, ta.policy_version) == \
               (tb.index, tb.group, tb.seed, tb.success, tb.steps, tb.env_reward, tb.decisions, tb.policy_version)


@pytest.mark.timeout(240)
def test_worker_log_probs_are_the_learners_and_pushed_weights_reach_every_worker(engine, policy):
    rollouts = engine.collect(GROUPS, GROUP_SIZE, policy_version=0)
    trajs = rollouts.trajectories
    assert [(t.index, t.group, t.seed) for t in trajs] == [(0, 0, 11), (1, 0, 11), (2, 1, 12), (3, 1, 12)]
    assert rollouts.env_steps == 4 * STEPS and {t.policy_version for t in trajs} == {0}
    assert rollouts.traj_ids.tolist() == [t.index for t in trajs for _ in t.decisions]
    # (1) the key on-policy property: the driver's recomputed log-probs equal what the workers recorded
    assert_on_policy(policy, rollouts)
    # (3) reproducible: the same (seed, iteration, worker) noise gives the same rollouts
    assert_same_rollouts(engine.collect(GROUPS, GROUP_SIZE, policy_version=0), rollouts)

    # a learner update, then the push: (2) every worker holds version 1 and the learner's weights bit for bit
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    new, _ = recomputed(policy, rollouts)
    loss = recompute_log_prob(UpdateContext(policy, optimizer, list(policy.parameters()), SAMPLING, 0,
                                            torch.Generator()), rollouts, torch.arange(len(rollouts))).log_prob.mean()
    loss.backward()
    optimizer.step()
    policy.eval()
    engine.push_weights(1)
    learner = policy.state_dict()
    for version, state in engine.worker_weights():
        assert version == 1 and state["policy"].keys() == learner.keys()
        assert all(torch.equal(state["policy"][k], learner[k]) for k in learner)
    assert not torch.equal(learner["obs_encoder.0.weight"], make_state_policy(seed=0).state_dict()["obs_encoder.0.weight"])
    after = engine.collect(GROUPS, GROUP_SIZE, policy_version=1)
    assert {t.policy_version for t in after.trajectories} == {1}
    assert staleness_stats(after.trajectories, 1, max_staleness=0)["staleness_max"] == 0.0
    assert_on_policy(policy, after)  # the workers sampled with the pushed weights
    with pytest.raises(ValueError, match="hold policy version 1, collect asked for 0"):
        engine.collect(GROUPS, GROUP_SIZE, policy_version=0)


class KillAtAdvance:
    """Calls through to the RayVectorEnv's _call; kills worker 0's process before its n-th rollout round."""

    def __init__(self, env, n):
        self.call, self.env, self.n, self.rounds = env._call, env, n, 0

    def __call__(self, workers, command, payloads):
        if command == "rollout_advance":
            self.rounds += 1
            if self.rounds == self.n:
                os.kill(self.env._worker_pid(0), signal.SIGKILL)
        return self.call(workers, command, payloads)


@pytest.mark.timeout(300)
def test_a_lost_worker_is_replaced_and_its_episodes_re_run_or_dropped(engine, workers, policy, monkeypatch):
    version = engine.version
    reference = engine.collect(GROUPS, GROUP_SIZE, policy_version=version)
    # replay, after a hang: the watchdog kills the worker that does not answer a round, Ray restarts it, it
    # rebuilds its policy copy and loads the pushed weights, and its share runs again: the same rollouts
    restarts = workers.restarts
    monkeypatch.setattr(workers, "step_timeout_s", 10.0)
    workers._inject_fault(0, 60.0)
    assert_same_rollouts(engine.collect(GROUPS, GROUP_SIZE, policy_version=version), reference)
    assert workers.restarts == restarts + 1 and engine.dropped_episodes == 0
    assert [v for v, _ in engine.worker_weights()] == [version, version]
    monkeypatch.setattr(workers, "step_timeout_s", 120.0)
    # drop, after a crash mid-rollout: worker 0's two episodes are left out, not scored as failures
    monkeypatch.setattr(workers, "lost_episodes", "drop")
    monkeypatch.setattr(workers, "_call", KillAtAdvance(workers, n=3))
    rollouts = engine.collect(GROUPS, GROUP_SIZE, policy_version=version)
    assert workers.restarts == restarts + 2 and engine.dropped_episodes == 2
    kept = [t for t in reference.trajectories if t.index in (1, 3)]  # worker 1 ran plan positions 1 and 3
    assert [(t.index, t.seed, t.steps, t.env_reward, t.success) for t in rollouts.trajectories] == \
           [(n, t.seed, t.steps, t.env_reward, t.success) for n, t in enumerate(kept)]
    assert rollouts.env_steps == 2 * STEPS and not any(t.infra_failure for t in rollouts.trajectories)
    assert_on_policy(policy, rollouts)


def test_worker_engine_refuses_env_workers_without_a_policy(ray_instance, policy):
    """A RayVectorEnv of plain EnvWorkers (--ray_inference driver) has no policy copy to run decisions on."""
    env_cfg = EnvConfig()
    env_cfg.max_episode_steps = STEPS
    with RayVectorEnv(1, env_kwargs_for(policy, env_cfg)) as env:
        with pytest.raises(TypeError, match="worker_cls=RolloutWorker"):
            WorkerRolloutEngine(policy, env, SAMPLING)

"""VectorEnv with several envs per worker: the same episodes as one env per worker, and the watchdog
semantics per env (a lost worker's envs each report an infrastructure failure)."""

import os
import signal
import time

import numpy as np
import pytest
import torch

from tests.policy.helpers import make_state_policy
from tests.sim.conftest import STEP_TIMEOUT_S, assert_infra_failure
from vla.eval.runner import run_episodes
from vla.rl.rollout import RolloutEngine, SamplingSpec
from vla.sim import VectorEnv, VectorEnvError

# Nothing rendered: the state-policy setting where several envs per worker pay. The staged dense reward
# moves with every action, so any change in an episode shows in it.
STATE_KWARGS = {"task": "lift", "cameras": (), "max_episode_steps": 24, "reward_shaping": True}


@pytest.fixture(scope="module")
def lockstep_env():
    """Five Lift envs at up to three per worker: two workers, holding envs 0-2 and 3-4."""
    with VectorEnv(5, STATE_KWARGS, step_timeout_s=STEP_TIMEOUT_S, envs_per_worker=3) as env:
        yield env


@pytest.fixture(scope="module")
def state_policy():
    # chunk_size 4, n_action_steps 2: 12 decisions per 24-step episode.
    return make_state_policy(seed=0).eval()


def _chunk(n_envs=5, horizon=2, value=0.0):
    return np.full((n_envs, horizon, 7), value, np.float32)


def _episode_rows(episodes):
    return [(e.episode_index, e.seed, e.success, e.steps, e.sum_reward, e.max_reward, e.infra_failure)
            for e in episodes]


def _rollout_rows(rollouts):
    trajectories = [(t.group, t.seed, t.success, t.steps, t.env_reward, t.decisions) for t in rollouts.trajectories]
    return trajectories, rollouts.chains, rollouts.log_probs, rollouts.observations["observation.state"]


def test_envs_are_spread_evenly_over_the_workers(lockstep_env):
    assert lockstep_env.num_envs == len(lockstep_env) == 5 and lockstep_env.num_workers == 2
    assert [list(r) for r in lockstep_env._envs_of] == [[0, 1, 2], [3, 4]]
    assert [p.name for p in lockstep_env._procs] == ["vla-sim-envs-0-2", "vla-sim-envs-3-4"]
    with pytest.raises(ValueError, match="envs_per_worker must be a positive int, got 0"):
        VectorEnv(2, STATE_KWARGS, envs_per_worker=0)


def test_lockstep_gives_the_same_episodes_as_one_env_per_worker(lockstep_env, state_policy):
    """Eval (per-episode and batched policy calls) and RL rollouts, 7 episodes in waves of 5 (the second
    wave partial, so some envs of a worker stay inactive): the same numbers, to the last bit."""
    def everything(vec_env):
        return (_episode_rows(run_episodes(state_policy, vec_env, 7, seed=300, progress=False)),
                _episode_rows(run_episodes(state_policy, vec_env, 7, seed=300, progress=False, batched_inference=True)),
                _rollout_rows(RolloutEngine(state_policy, vec_env, SamplingSpec("sde", "mixed", 0.5))
                              .collect([40, 41, 42], 2, torch.Generator().manual_seed(0))))

    with VectorEnv(5, STATE_KWARGS, step_timeout_s=STEP_TIMEOUT_S) as one_per_worker:
        assert one_per_worker.num_workers == 5
        want = everything(one_per_worker)
    got = everything(lockstep_env)
    assert got[0] == want[0] and got[1] == want[1]
    assert got[2][0] == want[2][0]
    for a, b in zip(got[2][1:], want[2][1:]):
        assert torch.equal(a, b)
    assert len({row[4] for row in want[0]}) > 1, "the episodes should differ from each other"


def test_inactive_envs_in_a_stepped_worker_are_not_touched(lockstep_env):
    lockstep_env.reset([1, 2, 3, 4, 5])
    before = lockstep_env.privileged_state()
    results = lockstep_env.step_chunk(_chunk(value=1.0), active=[True, False, True, False, False])
    after = lockstep_env.privileged_state()
    assert [r is None for r in results] == [False, True, False, True, True]
    for i in range(5):
        moved = not np.allclose(before[i]["eef_pos"], after[i]["eef_pos"])
        assert moved == (i in (0, 2)), i


def test_an_env_error_names_the_env_and_its_worker_mates_still_step(lockstep_env):
    lockstep_env.reset([1, 2, 3, 4, 5])
    before = lockstep_env.privileged_state()
    actions = _chunk(value=1.0)
    actions[1, 0, 0] = np.nan  # env 1: worker 0's middle env
    with pytest.raises(VectorEnvError, match=r"env 1 raised in 'step_chunk': ValueError: action contains NaN"):
        lockstep_env.step_chunk(actions)
    after = lockstep_env.privileged_state()
    # as in a worker of its own: env 2, after env 1 in the same worker, was still stepped
    assert not np.allclose(before[2]["eef_pos"], after[2]["eef_pos"])
    results = lockstep_env.step_chunk(_chunk())  # all still answer, in sync
    assert all(r[4]["steps"] == 2 for r in results)


def test_a_killed_worker_loses_the_episodes_of_all_its_envs(lockstep_env):
    first = lockstep_env.reset([5, 6, 7, 8, 9])
    restarts, old_pid = lockstep_env.restarts, lockstep_env._procs[0].pid
    os.kill(old_pid, signal.SIGKILL)
    # env 1 sits out this chunk: its episode is lost all the same (its simulator went with the process)
    results = lockstep_env.step_chunk(_chunk(), active=[True, False, True, True, True])
    assert results[1] is None
    for i in (0, 2):
        assert_infra_failure(results[i], "envs 0-2 worker process is gone")
    assert all(results[i][4]["steps"] == 2 and "infra_failure" not in results[i][4] for i in (3, 4))
    assert lockstep_env.restarts == restarts + 1 and lockstep_env._procs[0].pid != old_pid
    results = lockstep_env.step_chunk(_chunk())  # lost until reset, env 1 included
    for i in (0, 1, 2):
        assert_infra_failure(results[i], "worker process is gone")
    assert lockstep_env.privileged_state()[:3] == [None] * 3

    again = lockstep_env.reset([5, 6, 7, 8, 9])  # the fresh worker gives the same initial states
    for got, want in zip(again, first):
        np.testing.assert_array_equal(got["state"], want["state"])
    assert all(r[4]["steps"] == 2 and "infra_failure" not in r[4] for r in lockstep_env.step_chunk(_chunk()))


def test_reset_replaces_a_dead_worker_and_retries(lockstep_env):
    expected = lockstep_env.reset([3, 4, 5, 6, 7])
    restarts = lockstep_env.restarts
    os.kill(lockstep_env._procs[1].pid, signal.SIGKILL)
    lockstep_env._procs[1].join(timeout=10)
    obs = lockstep_env.reset([3, 4, 5, 6, 7])
    assert lockstep_env.restarts == restarts + 1
    for got, want in zip(obs, expected):
        np.testing.assert_array_equal(got["state"], want["state"])
        np.testing.assert_array_equal(got["environment_state"], want["environment_state"])


def test_a_hung_worker_is_killed_and_eval_scores_its_envs_apart(lockstep_env, state_policy):
    from vla.eval.report import build_eval_info

    lockstep_env.reset([0] * 5)
    lockstep_env._inject_fault(1, sleep_s=600.0)  # worker 1 (envs 3 and 4) hangs on the first chunk
    hung_pid = lockstep_env._procs[1].pid
    lockstep_env.step_timeout_s = 2.0
    start = time.monotonic()
    try:
        episodes = run_episodes(state_policy, lockstep_env, n_episodes=5, seed=7, progress=False)
    finally:
        lockstep_env.step_timeout_s = STEP_TIMEOUT_S
    assert time.monotonic() - start < STEP_TIMEOUT_S  # the 2 s timeout and one rebuild, not the 600 s hang
    with pytest.raises(ProcessLookupError):
        os.kill(hung_pid, 0)  # killed and reaped
    assert [e.infra_failure for e in episodes] == [False, False, False, True, True]
    assert [e.steps for e in episodes] == [24, 24, 24, 0, 0]
    info = build_eval_info(episodes, eval_seconds=1.0, seed=7, video_paths=[])
    assert info["aggregated"]["n_episodes"] == 3 and info["aggregated"]["n_infra_failures"] == 2

    lockstep_env.reset([1, 2, 3, 4, 5])  # the replacement worker serves the next episodes
    assert all(r[4]["steps"] == 2 for r in lockstep_env.step_chunk(_chunk()))

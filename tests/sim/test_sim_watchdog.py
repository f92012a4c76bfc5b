"""VectorEnv watchdog: crashed or hung workers are replaced and their episode flagged, never the run lost."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from tests.sim.conftest import LIFT_KWARGS, STEP_TIMEOUT_S, assert_infra_failure

# vec_env (conftest): two Lift workers, step_timeout_s STEP_TIMEOUT_S.


def _chunk(n_envs=2, horizon=2):
    return np.zeros((n_envs, horizon, 7), np.float32)


def _assert_healthy(result, steps=2):
    assert "infra_failure" not in result[4] and result[4]["steps"] == steps


def test_worker_killed_mid_episode_is_restarted_and_flagged(vec_env):
    first = vec_env.reset([5, 6])
    _assert_healthy(vec_env.step_chunk(_chunk())[0])
    restarts, old_pid = vec_env.restarts, vec_env._procs[0].pid
    os.kill(old_pid, signal.SIGKILL)

    results = vec_env.step_chunk(_chunk())
    assert_infra_failure(results[0], "worker process is gone")
    _assert_healthy(results[1])
    assert vec_env.restarts == restarts + 1 and vec_env._procs[0].pid != old_pid
    # The lost episode stays lost (the fresh worker is not stepped) until reset.
    results = vec_env.step_chunk(_chunk())
    assert_infra_failure(results[0], "worker process is gone")
    _assert_healthy(results[1])
    assert vec_env.privileged_state()[0] is None

    again = vec_env.reset([5, 6])  # the fresh worker gives the same initial state
    np.testing.assert_array_equal(first[0]["state"], again[0]["state"])
    np.testing.assert_array_equal(first[0]["images"]["agentview"], again[0]["images"]["agentview"])
    assert all(r[4]["steps"] == 2 and "infra_failure" not in r[4] for r in vec_env.step_chunk(_chunk()))


def test_worker_dying_inside_a_call_is_flagged(vec_env):
    vec_env.reset([1, 2])
    vec_env._inject_fault(1, sleep_s=300.0)  # busy in step_chunk when the kill lands
    killer = threading.Timer(0.5, os.kill, (vec_env._procs[1].pid, signal.SIGKILL))
    killer.start()
    start = time.monotonic()
    results = vec_env.step_chunk(_chunk())
    killer.join()
    # noticed at death, not at the 300 s sleep's end (the margin covers a worker rebuild on a loaded machine)
    assert time.monotonic() - start < 120.0
    _assert_healthy(results[0])
    assert_infra_failure(results[1], "exit code -9")


def test_reset_replaces_a_dead_worker_and_retries(vec_env):
    expected = vec_env.reset([3, 4])
    restarts = vec_env.restarts
    os.kill(vec_env._procs[1].pid, signal.SIGKILL)
    vec_env._procs[1].join(timeout=10)
    obs = vec_env.reset([3, 4])
    assert vec_env.restarts == restarts + 1
    for got, want in zip(obs, expected):
        np.testing.assert_array_equal(got["state"], want["state"])


class _ZeroPolicy:
    """The least a policy needs for ``run_episodes``: zero actions, chunks of 10.

    Short chunks keep a healthy worker's answer far inside the test's 2 s step timeout even on a
    loaded machine (a 50-step chunk took over 2 s at load average 10)."""

    class config:  # noqa: N801 - mirrors policy.config
        cameras = ["agentview"]
        n_action_steps = 10
        chunk_size = 10
        model_action_dim = 7

    def predict_action_chunk(self, batch, noise=None):
        import torch

        return torch.zeros(batch["observation.state"].shape[0], 10, 7)


def test_hung_worker_is_killed_after_the_timeout_and_eval_scores_it_apart(vec_env, monkeypatch):
    from vla.eval.report import build_eval_info
    from vla.eval.runner import run_episodes

    vec_env.reset([0, 0])
    vec_env._inject_fault(0, sleep_s=600.0)  # episode 0's first chunk hangs
    hung_pid = vec_env._procs[0].pid
    answers = []
    step_chunk = vec_env.step_chunk
    monkeypatch.setattr(vec_env, "step_chunk", lambda *a, **k: answers.append(step_chunk(*a, **k)) or answers[-1])
    vec_env.step_timeout_s = 2.0
    start = time.monotonic()
    try:
        episodes = run_episodes(_ZeroPolicy(), vec_env, n_episodes=2, seed=7, progress=False)
    finally:
        vec_env.step_timeout_s = STEP_TIMEOUT_S
    assert time.monotonic() - start < STEP_TIMEOUT_S  # the 2 s timeout, one rebuild, one episode
    with pytest.raises(ProcessLookupError):
        os.kill(hung_pid, 0)  # the hung process was killed (and reaped)
    assert [e.infra_failure for e in episodes] == [True, False] and not episodes[0].success
    assert episodes[0].steps == 0 and episodes[1].steps == LIFT_KWARGS["max_episode_steps"]
    info = build_eval_info(episodes, eval_seconds=1.0, seed=7, video_paths=[])
    assert info["aggregated"]["n_episodes"] == 1 and info["aggregated"]["n_infra_failures"] == 1

    assert_infra_failure(answers[0][0], "did not answer 'step_chunk' within 2.0 s")
    assert "infra_failure" not in answers[0][1][4]

    monkeypatch.undo()  # the replacement worker serves the next episode
    vec_env.reset([1, 2])
    assert all(r[4]["steps"] == 2 for r in vec_env.step_chunk(_chunk()))

"""The Ray backend's vector env at the sim layer: watchdog, connection and code-version errors.

Parity with the local backend and worker kills during a real rollout are in
tests/rl/test_rl_ray_backend.py. One local Ray instance serves the module (2 CPUs, no dashboard).
"""

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from vla.sim import code_version  # noqa: E402
from vla.sim import ray_vector_env  # noqa: E402
from vla.sim.ray_connect import RayBackendError, parse_resources, start_local  # noqa: E402
from vla.sim.ray_vector_env import RayVectorEnv  # noqa: E402

STATE_LIFT = {"task": "lift", "cameras": (), "max_episode_steps": 40}


@pytest.fixture(scope="module")
def ray_instance():
    start_local(ray, num_cpus=2)  # workers at this process's priority, as `vla rl --backend ray` starts them
    yield
    ray.shutdown()


@pytest.mark.timeout(120)
def test_a_hung_worker_is_restarted_and_its_episode_dropped_as_an_infra_failure(ray_instance):
    with RayVectorEnv(2, STATE_LIFT, envs_per_worker=1, step_timeout_s=3.0) as env:
        env.reset([1, 2])
        actions = np.zeros((2, 2, 7), np.float32)
        env._inject_fault(1, sleep_s=30.0)
        results = env.step_chunk(actions)
        assert env.restarts == 1
        assert not results[0][4].get("infra_failure")  # the other worker's episode goes on
        obs, reward, terminated, truncated, info = results[1]
        assert info["infra_failure"] is True and info["is_success"] is False and info["steps"] == 0
        assert terminated and truncated and reward == 0.0 and obs["state"].shape == (8,)
        assert "did not answer 'step_chunk' within 3.0 s" in info["infra_reason"]
        assert env.step_chunk(actions)[1][4]["infra_failure"]  # lost until the next reset
        env.reset([1, 2])  # the restarted worker serves new episodes
        assert not any(r[4].get("infra_failure") for r in env.step_chunk(actions))


def test_an_unreachable_address_fails_fast_naming_it(ray_instance):
    with pytest.raises(RayBackendError, match=r"127\.0\.0\.1:1: .*refused"):
        RayVectorEnv(1, STATE_LIFT, address="127.0.0.1:1")
    with pytest.raises(RayBackendError, match="'nowhere' is not 'auto' or host:port"):
        RayVectorEnv(1, STATE_LIFT, address="nowhere")
    with pytest.raises(RayBackendError, match="Ray Client .* not supported"):
        RayVectorEnv(1, STATE_LIFT, address="ray://head:10001")


@pytest.mark.timeout(120)
def test_a_worker_running_other_code_is_refused_at_connect(ray_instance, monkeypatch):
    real = code_version.code_fingerprint()
    # The driver pretends its sim code differs; the worker (its own process) reports the real one.
    monkeypatch.setattr(ray_vector_env, "code_fingerprint", lambda: {**real, "vla.sim sources": "0123abcd"})
    with pytest.raises(RayBackendError, match=r"env 0: the Ray worker runs other code than this driver "
                                              r"\(vla\.sim sources: driver 0123abcd, worker [0-9a-f]{16}\)"):
        RayVectorEnv(1, STATE_LIFT)


def test_bad_arguments_are_refused_before_ray_starts():
    with pytest.raises(ValueError, match="lost_episodes must be one of drop, replay"):
        RayVectorEnv(1, STATE_LIFT, lost_episodes="retry")
    with pytest.raises(ValueError, match="unknown task .lfit."):
        RayVectorEnv(1, {"task": "lfit"})


def test_resources_parse_and_bad_entries_are_named():
    assert parse_resources("sim=1, big_node=0.5") == {"sim": 1.0, "big_node": 0.5} and parse_resources("") == {}
    for bad in ("sim", "sim=0", "=1", "sim=lots"):
        with pytest.raises(RayBackendError, match="--ray_resources: .* is not name=amount"):
            parse_resources(bad)


def test_fingerprint_mismatch_names_each_difference():
    a = {"vla-rl": "0.1.0", "mujoco": "3.3.7"}
    assert code_version.fingerprint_mismatch(a, dict(a)) is None
    assert code_version.fingerprint_mismatch(a, {"vla-rl": "0.2.0", "mujoco": "3.3.7"}) == \
        "vla-rl: driver 0.1.0, worker 0.2.0"


def test_local_workers_run_at_the_drivers_priority(ray_instance):
    """Ray's default worker niceness (15) starves env workers on a machine with any other load
    (146 ms against 12 ms per Lift step, measured); start_local asks for the driver's priority."""
    import os

    @ray.remote(num_cpus=1)
    def niceness():
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)

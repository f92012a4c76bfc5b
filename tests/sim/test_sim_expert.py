"""LiftExpert: succeeds quickly, actions well-formed, noise reproducible."""

import numpy as np
import pytest

from tests.sim.conftest import run_expert_episode
from vla.sim import LiftExpert


def _run_episode(env, expert, seed, max_steps=200):
    env.reset(seed=seed)
    expert.reset()
    success, steps, _ = run_expert_episode(env, expert, max_steps)
    return success, steps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_lifts_the_cube_quickly(lift_env, seed):
    success, steps = _run_episode(lift_env, LiftExpert(), seed)
    assert success, f"seed {seed}: no success within {steps} steps"
    assert steps <= 80


def test_noisy_expert_still_succeeds(lift_env):
    success, _ = _run_episode(lift_env, LiftExpert(noise_std=0.1, seed=0), seed=10)
    assert success


def test_noise_is_seeded_and_spares_the_gripper(lift_env):
    lift_env.reset(seed=0)
    state = lift_env.privileged_state()
    clean = LiftExpert().act(state)
    a = [LiftExpert(noise_std=0.05, seed=3).act(state) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    assert not np.allclose(a[0][:6], clean[:6])
    assert a[0][6] == clean[6] == -1.0  # gripper open on approach


def test_negative_noise_rejected():
    with pytest.raises(ValueError, match="noise_std"):
        LiftExpert(noise_std=-0.1)


def test_make_expert_knows_lift_and_lists_tasks_for_unknown():
    import pytest

    from vla.sim import LiftExpert, make_expert

    assert isinstance(make_expert("lift", noise_std=0.1, seed=3), LiftExpert)
    with pytest.raises(ValueError, match="lift"):
        make_expert("juggle")

"""Safety layer properties, without ROS: nothing unsafe ever leaves filter()."""

import logging
from pathlib import Path

import numpy as np
import pytest

from vla.real_robot.rate_limited_log import RateLimitedLog
from vla.real_robot.robot_config import load_robot_config
from vla.real_robot.safety import Intervention, SafeCommand, SafetyLayer, SafetyLimits

PANDA = Path(__file__).resolve().parents[2] / "configs" / "robot" / "panda.yaml"
CONFIG = load_robot_config(PANDA)
LIMITS = SafetyLimits.from_robot_config(CONFIG)
DT = LIMITS.control_period_s
HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])
TOL = 1e-9


def toy_fk(q: np.ndarray) -> np.ndarray:
    """A smooth stand-in for the arm's kinematics, mapping HOME into the Panda workspace box."""
    return np.array([0.45 + 0.5 * np.sin(q[0]), 0.7 * np.sin(q[1] + 0.3), 0.4 + 0.6 * np.sin(q[2])])


def running_layer(fk=None, q0=HOME) -> SafetyLayer:
    layer = SafetyLayer(LIMITS, forward_kinematics=fk)
    layer.observe(q0, stamp=0.0)
    assert layer.enable()[0]
    return layer


def test_safe_command_cannot_be_forged():
    with pytest.raises(TypeError):
        SafeCommand(np.zeros(7), np.zeros(7), False, ())


def test_startup_gate_needs_fresh_observation_and_operator():
    layer = SafetyLayer(CONFIG)
    cmd = layer.filter(HOME + 0.1, now=0.0)
    assert cmd.positions is None and cmd.holding and Intervention.NO_OBSERVATION in cmd.interventions
    layer.observe(HOME, stamp=0.0)
    cmd = layer.filter(HOME + 0.1, now=0.01)
    assert cmd.positions is None and Intervention.NOT_ENABLED in cmd.interventions
    # Enabled, but the only observation is stale by now: still nothing moves.
    layer.enable()
    cmd = layer.filter(HOME + 0.1, now=1.0)
    assert cmd.positions is None and Intervention.STALE_OBSERVATION in cmd.interventions
    layer.observe(HOME, stamp=1.0)
    cmd = layer.filter(HOME + 0.1, now=1.01)
    assert not cmd.holding and cmd.positions is not None
    assert np.all(np.abs(cmd.positions - HOME) <= LIMITS.acceleration_max * DT * DT + TOL)  # starts at rest
    assert layer.counts["no_observation"] == 1 and layer.counts["not_enabled"] == 1


def test_enable_before_observation_moves_once_observed():
    layer = SafetyLayer(LIMITS)
    layer.enable()
    assert layer.filter(HOME, now=0.0).positions is None
    layer.observe(HOME, stamp=0.0)
    assert not layer.filter(HOME + 0.05, now=0.0).holding


def test_nan_and_inf_never_pass():
    layer = running_layer()
    for bad in (np.nan, np.inf, -np.inf):
        target = HOME.copy()
        target[2] = bad
        cmd = layer.filter(target, now=0.0)
        assert np.all(np.isfinite(cmd.positions))
        assert Intervention.NON_FINITE in cmd.interventions
    wrong = layer.filter(np.zeros(6), now=0.0)
    assert Intervention.BAD_SHAPE in wrong.interventions and np.all(np.isfinite(wrong.positions))
    assert layer.counts["non_finite"] == 3 and layer.counts["bad_shape"] == 1


def test_limits_hold_under_random_adversarial_targets():
    rng = np.random.default_rng(1234)
    layer = running_layer()
    prev_q, prev_v = HOME.copy(), np.zeros(7)
    target = HOME.copy()
    reached_limit = np.zeros(7, dtype=bool)
    for step in range(4000):
        now = step * DT
        layer.observe(prev_q, stamp=now)  # the arm follows perfectly
        if rng.random() < 0.1:  # change the target now and then, so the arm gets up to speed
            kind = rng.integers(6)
            if kind == 0:
                target = rng.uniform(-10, 10, size=7)
            elif kind == 1:
                target = np.where(rng.random(7) < 0.5, LIMITS.position_min, LIMITS.position_max) * 5
            elif kind == 2:
                target = prev_q + rng.normal(0, 0.5, size=7)
            elif kind == 3:
                target = rng.uniform(-10, 10, size=7)
                target[rng.integers(7)] = rng.choice([np.nan, np.inf, -np.inf])
            elif kind == 4:
                target = None
            else:
                target = rng.uniform(-1e9, 1e9, size=7)
        cmd = layer.filter(target, now)
        q = cmd.positions
        assert q is not None and np.all(np.isfinite(q))
        assert np.all(q >= LIMITS.position_min - TOL) and np.all(q <= LIMITS.position_max + TOL)
        v = (q - prev_q) / DT
        assert np.all(np.abs(v) <= LIMITS.velocity_max * (1 + 1e-9) + TOL)
        assert np.all(np.abs(v - prev_v) <= LIMITS.acceleration_max * DT * (1 + 1e-9) + 1e-7), step
        np.testing.assert_allclose(cmd.velocities, v, atol=1e-9)
        reached_limit |= (np.abs(q - LIMITS.position_min) < 1e-2) | (np.abs(q - LIMITS.position_max) < 1e-2)
        prev_q, prev_v = q, v
    counts = layer.counts
    # The run really pushed on every rule, so the asserts above were tested, not vacuous.
    for kind in ("position_limit", "velocity_limit", "acceleration_limit", "non_finite"):
        assert counts[kind] > 20, (kind, counts)
    assert reached_limit.sum() >= 5, reached_limit


def test_workspace_box_never_left():
    rng = np.random.default_rng(7)
    layer = running_layer(fk=toy_fk)
    lo, hi = LIMITS.workspace_min, LIMITS.workspace_max
    assert np.all(toy_fk(HOME) > lo) and np.all(toy_fk(HOME) < hi)
    target = HOME
    for step in range(2000):
        now = step * DT
        layer.observe(layer.last_commanded if step else HOME, stamp=now)
        if rng.random() < 0.1:
            target = rng.uniform(-3, 3, size=7)
        cmd = layer.filter(target, now)
        p = toy_fk(cmd.positions)
        assert np.all(p >= lo - TOL) and np.all(p <= hi + TOL), step
    assert layer.counts["workspace"] > 10


def test_workspace_allows_moving_back_from_outside_and_holds_on_fk_failure():
    outside = HOME.copy()
    outside[0] = 0.6
    fk = lambda q: toy_fk(q) + np.array([0.2, 0.0, 0.0])  # x ~ 0.93 > 0.8: outside the box  # noqa: E731
    assert fk(outside)[0] > LIMITS.workspace_max[0]
    layer = running_layer(fk=fk, q0=outside)
    away = layer.filter(outside + np.array([0.5, 0, 0, 0, 0, 0, 0]), now=0.0)
    assert away.holding and Intervention.WORKSPACE in away.interventions
    back = layer.filter(outside - np.array([0.5, 0, 0, 0, 0, 0, 0]), now=0.0)
    assert not back.holding and back.positions[0] < outside[0]

    def broken_fk(q):
        raise RuntimeError("no model")

    layer = running_layer(fk=broken_fk)
    cmd = layer.filter(HOME + 0.1, now=0.0)
    assert cmd.holding and np.array_equal(cmd.positions, HOME)


def test_emergency_stop_latches_until_resume():
    layer = running_layer()
    for i in range(5):
        moving = layer.filter(HOME + 0.5, now=i * DT)
    assert not moving.holding
    held = moving.positions.copy()
    layer.emergency_stop("test")
    for i in range(50):
        layer.observe(held, stamp=(5 + i) * DT)
        cmd = layer.filter(HOME + 1.0, now=(5 + i) * DT)
        assert cmd.holding and np.array_equal(cmd.positions, held)
        assert Intervention.EMERGENCY_STOP in cmd.interventions
    assert layer.emergency_stops == 1 and layer.counts["emergency_stop"] == 50
    ok, message = layer.enable()
    assert not ok and "resume" in message
    assert layer.filter(HOME + 1.0, now=55 * DT).holding
    # Resume restarts from the measured position at rest (the arm may have been pushed).
    measured = held + 0.01
    layer.observe(measured, stamp=56 * DT)
    assert layer.resume()[0]
    cmd = layer.filter(HOME + 1.0, now=56 * DT)
    assert not cmd.holding
    assert np.all(np.abs(cmd.positions - measured) <= LIMITS.acceleration_max * DT * DT + TOL)


def test_stale_observation_holds_then_recovers():
    layer = running_layer()
    layer.filter(HOME + 0.5, now=0.0)
    moving = layer.filter(HOME + 0.5, now=0.05)
    assert not moving.holding
    for now in (0.11, 0.5, 3.0):
        cmd = layer.filter(HOME + 0.5, now=now)
        assert cmd.holding and np.array_equal(cmd.positions, moving.positions)
        assert Intervention.STALE_OBSERVATION in cmd.interventions
    # A stamp far in the future (clock skew) is not fresh either.
    layer.observe(moving.positions, stamp=10.0)
    assert layer.filter(HOME + 0.5, now=3.0).holding
    layer = running_layer()
    layer.filter(HOME + 0.5, now=0.0)
    moving = layer.filter(HOME + 0.5, now=0.05)
    assert layer.filter(HOME + 0.5, now=0.5).holding
    layer.observe(moving.positions, stamp=3.0)
    cmd = layer.filter(HOME + 0.5, now=3.01)
    assert not cmd.holding
    # After a hold the arm restarts from rest: one period of acceleration at most.
    assert np.all(np.abs(cmd.positions - moving.positions) <= LIMITS.acceleration_max * DT * DT + TOL)


def test_bad_observations_are_refused():
    layer = SafetyLayer(LIMITS)
    assert not layer.observe(np.zeros(6), stamp=0.0)
    assert not layer.observe(np.full(7, np.nan), stamp=0.0)
    assert layer.observe(HOME, stamp=1.0)
    assert not layer.observe(HOME, stamp=0.5)  # older than the last one
    assert layer.counts["bad_observation"] == 3


def test_none_target_brakes_smoothly():
    layer = running_layer()
    q, v = HOME.copy(), np.zeros(7)
    for i in range(30):
        cmd = layer.filter(HOME + 2.0, now=0.0)
        v, q = (cmd.positions - q) / DT, cmd.positions
    assert np.abs(v).max() > 1.0
    for i in range(100):
        cmd = layer.filter(None, now=0.0)
        new_v = (cmd.positions - q) / DT
        assert np.all(np.abs(new_v - v) <= LIMITS.acceleration_max * DT + 1e-7)
        assert np.all(np.abs(new_v) <= np.abs(v) + TOL)  # never speeds up
        v, q = new_v, cmd.positions
    assert np.allclose(v, 0.0)


def test_interventions_are_counted_every_time_but_logged_rate_limited(caplog):
    clock = [0.0]
    log = RateLimitedLog(logging.getLogger("test.safety"), interval_s=1.0, clock=lambda: clock[0])
    layer = SafetyLayer(LIMITS, log=log)
    layer.observe(HOME, 0.0)
    layer.enable()
    with caplog.at_level(logging.WARNING, logger="test.safety"):
        for _ in range(100):
            layer.filter(np.full(7, np.nan), now=0.0)
        clock[0] = 1.5
        layer.filter(np.full(7, np.nan), now=0.0)
    lines = [r.getMessage() for r in caplog.records if "non_finite" in r.getMessage()]
    assert layer.counts["non_finite"] == 101
    assert len(lines) == 2 and "99 more suppressed" in lines[1]

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
        if cmd.positions is None:  # a hold at rest: nothing sent, the arm stays where it is
            assert cmd.holding, step
            continue
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
    # At rest: nothing is sent (the controller keeps its point), as any hold at rest.
    assert cmd.holding and cmd.positions is None and Intervention.WORKSPACE in cmd.interventions


def follow(layer: SafetyLayer, cmd, now: float) -> None:
    """An ideal arm: it is where the last command put it, measured at `now`."""
    if cmd.positions is not None:
        layer.observe(cmd.positions, stamp=now)


def move_then(layer: SafetyLayer, target, steps: int, t0: float = 0.0):
    """`steps` ticks toward `target` with the arm following; returns (last command, next time)."""
    for i in range(steps):
        cmd = layer.filter(target, now=t0 + i * DT)
        follow(layer, cmd, t0 + i * DT)
    return cmd, t0 + steps * DT


def assert_brakes_then_goes_quiet(layer: SafetyLayer, last, t0: float, kind: Intervention, observe=True):
    """Hold ticks: decelerate within the acceleration limit to rest, then send nothing. Returns the rest point."""
    q, v = last.positions, last.velocities
    sent = 0
    for i in range(60):
        now = t0 + i * DT
        cmd = layer.filter(HOME + 1.0, now=now)
        assert cmd.holding and kind in cmd.interventions
        if cmd.positions is None:
            break
        new_v = (cmd.positions - q) / DT
        assert np.all(np.abs(new_v - v) <= LIMITS.acceleration_max * DT + 1e-7)
        assert np.all(np.abs(new_v) <= np.abs(v) + TOL)  # never speeds up
        q, v, sent = cmd.positions, new_v, sent + 1
        if observe:
            follow(layer, cmd, now)
    assert 1 < sent < 30 and np.allclose(v, 0.0), (sent, v)
    for i in range(5):  # at rest: quiet
        assert layer.filter(HOME + 1.0, now=t0 + (60 + i) * DT).positions is None
    return q


def test_emergency_stop_brakes_and_latches_until_resume():
    layer = running_layer()
    moving, t = move_then(layer, HOME + 0.5, 8)
    assert not moving.holding and np.abs(moving.velocities).max() > 1.0
    layer.emergency_stop("test")
    held = assert_brakes_then_goes_quiet(layer, moving, t, Intervention.EMERGENCY_STOP)
    assert layer.emergency_stops == 1 and layer.counts["emergency_stop"] > 5
    ok, message = layer.enable()
    assert not ok and "resume" in message
    # Resume restarts from the measured position at rest (the arm may have been pushed).
    measured = held + 0.01
    assert layer.resume()[0]
    layer.observe(measured, stamp=2.0)
    cmd = layer.filter(HOME + 1.0, now=2.0)
    assert not cmd.holding
    assert np.all(np.abs(cmd.positions - measured) <= LIMITS.acceleration_max * DT * DT + TOL)


def test_resume_needs_a_latch_and_disable_holds_until_enable():
    layer = running_layer()
    ok, message = layer.resume()
    assert not ok and "enable" in message
    moving, t = move_then(layer, HOME + 0.5, 8)
    assert layer.disable()[0] and not layer.enabled
    held = assert_brakes_then_goes_quiet(layer, moving, t, Intervention.NOT_ENABLED)
    assert layer.enable()[0]
    layer.observe(held, stamp=3.0)
    cmd = layer.filter(HOME + 0.5, now=3.0)
    assert not cmd.holding and np.all(np.abs(cmd.positions - held) <= LIMITS.acceleration_max * DT * DT + TOL)


def test_stale_observation_brakes_then_recovers_from_the_measured_pose():
    layer = running_layer()
    moving, t = move_then(layer, HOME + 0.5, 8)
    # No observation from now on: stale after max_observation_age_s, then a braking hold.
    t_stale = t + LIMITS.max_observation_age_s + DT
    rest = assert_brakes_then_goes_quiet(layer, layer.filter(HOME + 0.5, now=t), t_stale,
                                         Intervention.STALE_OBSERVATION, observe=False)
    # A stamp far in the future (clock skew) is not fresh either.
    layer.observe(rest, stamp=100.0)
    assert layer.filter(HOME + 0.5, now=3.0).positions is None
    layer = running_layer()
    moving, t = move_then(layer, HOME + 0.5, 8)
    rest = assert_brakes_then_goes_quiet(layer, layer.filter(HOME + 0.5, now=t), t + 1.0,
                                         Intervention.STALE_OBSERVATION, observe=False)
    measured = rest + 0.02  # within the following tolerance of the rest point
    layer.observe(measured, stamp=5.0)
    cmd = layer.filter(HOME + 0.5, now=5.0)
    assert not cmd.holding
    # After a hold the arm restarts from rest at the measured pose: one period of acceleration at most.
    assert np.all(np.abs(cmd.positions - measured) <= LIMITS.acceleration_max * DT * DT + TOL)


def test_measured_pose_far_from_the_commands_latches_and_sends_nothing():
    layer = running_layer()
    moving, t = move_then(layer, HOME + 0.5, 8)
    # The arm stops following (a static arm): the commands may run ahead by the tolerance plus what
    # full speed covers in the lag window, no further.
    bound = LIMITS.max_following_error_rad + LIMITS.velocity_max.max() * (LIMITS.following_lag_s + 2 * DT)
    for i in range(40):
        cmd = layer.filter(HOME + 0.5, now=t + i * DT)
        layer.observe(moving.positions, stamp=t + i * DT)
        if cmd.positions is not None:
            assert np.abs(cmd.positions - moving.positions).max() < bound
    assert layer.latch == "following_error" and layer.counts["following_error"] > 0
    assert cmd.positions is None and not layer.enable()[0]
    # After a hold came to rest, a measured pose beyond the tolerance latches instead of re-anchoring.
    layer = running_layer()
    moving, t = move_then(layer, HOME + 0.5, 8)
    rest = assert_brakes_then_goes_quiet(layer, layer.filter(HOME + 0.5, now=t), t + 1.0,
                                         Intervention.STALE_OBSERVATION, observe=False)
    layer.observe(rest + 0.5, stamp=5.0)  # the arm restarted elsewhere
    assert layer.filter(HOME + 0.5, now=5.0).positions is None and layer.latch == "following_error"


def test_jumping_joint_states_latch_and_resume_waits_for_quiet():
    layer = running_layer()
    moving, t = move_then(layer, HOME + 0.5, 5)
    spoofed = moving.positions + np.array([0.73, 0, 0, 0, 0, 0, 0])
    assert not layer.observe(spoofed, stamp=t)  # 0.73 rad in no time: impossible
    assert layer.latch == "observation_jump" and layer.filter(HOME, now=t).positions is None
    ok, message = layer.resume()
    assert not ok and "jumped" in message
    layer.observe(moving.positions, stamp=t + 0.5)
    assert not layer.resume()[0]
    layer.observe(moving.positions, stamp=t + 1.2)  # a second later without jumps
    assert layer.resume()[0]


def test_future_stamps_are_refused_and_a_clock_step_back_recovers():
    layer = running_layer()
    assert not layer.observe(HOME, stamp=3600.0, now=1.0)
    assert layer.counts["future_stamp"] == 1
    assert layer.observe(HOME, stamp=1.0, now=1.0)
    assert layer.observe(HOME, stamp=1.04, now=1.0)  # within max_clock_skew_s
    # Our clock steps back an hour (NTP): the stored stamp is now in the future and orders nothing.
    assert layer.observe(HOME, stamp=1.0 - 3600.0, now=1.0 - 3600.0)
    assert not layer.filter(HOME, now=1.0 - 3600.0).holding


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


def test_a_workspace_hold_at_rest_sends_nothing_and_latches_on_a_push_beyond_the_tolerance():
    """At rest in a workspace hold (the policy keeps pushing out), nothing is sent: the hold point
    does not follow the measured arm, and the last command sent stays the following reference."""
    fk = lambda q: toy_fk(q) + np.array([0.34, 0.0, 0.0])  # HOME at x = 0.79, just inside the box  # noqa: E731
    assert LIMITS.workspace_max[0] - 0.02 < fk(HOME)[0] < LIMITS.workspace_max[0]
    layer = running_layer(fk=fk)
    out = HOME + np.array([0.5, 0, 0, 0, 0, 0, 0])  # +x: out of the box
    sent, now = [], 0.0
    for i in range(40):  # toward the box's face, then a hold that brakes to rest
        now = i * DT
        cmd = layer.filter(out, now)
        follow(layer, cmd, now)
        sent.append(cmd.positions)
    assert layer.counts["workspace"] > 0 and all(q is None for q in sent[-10:]), "kept sending at rest"
    rest = layer.last_commanded
    for i, push in enumerate(np.linspace(0.0, 0.2, 12)):  # pushed by hand along joint 2
        now += DT
        layer.observe(rest + np.array([0, push, 0, 0, 0, 0, 0]), stamp=now)
        cmd = layer.filter(out, now)
        assert cmd.positions is None, f"commanded the pushed arm at {push:.3f} rad"
        if push > LIMITS.max_following_error_rad + 0.02:
            break
    assert layer.latch == "following_error", layer.counts

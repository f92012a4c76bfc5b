"""Every JointTrajectory the node publishes is one that joint_trajectory_controller (Jazzy/Kilted,
default parameters) accepts, checked message by message against real_robot/jtc_rules.py: while
moving, braking on stale data, braking on e-stop and on disable_motion. ros2_control cannot be
installed here, so the rules stand in for the controller; the first tests pin the rules themselves."""

from __future__ import annotations

import time

import numpy as np
import pytest

try:
    from vla.real_robot.ros_env import import_rclpy

    import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

from builtin_interfaces.msg import Duration  # noqa: E402
from dds_loop import HOME, OFFSET, call, enable_and_move, running_loop, wait_for  # noqa: E402
from trajectory_msgs.msg import JointTrajectoryPoint  # noqa: E402

from vla.real_robot.jtc_rules import ControllerParams, jtc_violations  # noqa: E402
from vla.real_robot.ros_messages import joint_trajectory_msg, stamp_to_seconds  # noqa: E402

JOINTS = tuple(f"j{i}" for i in range(3))
LO, HI = [-1.0] * 3, [1.0] * 3


def _violations(msg, now=100.0, **params):
    return jtc_violations(msg, ControllerParams(JOINTS, **params), now=now, position_min=LO, position_max=HI)


def test_the_rules_accept_what_the_node_builds_and_reject_what_the_controller_rejects():
    good = joint_trajectory_msg(list(JOINTS), np.zeros(3), None, 0.02, None)
    assert _violations(good) == []
    # Since Jazzy: non-zero velocity at the end is refused unless the parameter allows it.
    moving = joint_trajectory_msg(list(JOINTS), np.zeros(3), np.array([0.1, 0.0, 0.0]), 0.02, None)
    assert any("non-zero velocities" in v for v in _violations(moving))
    assert _violations(moving, allow_nonzero_velocity_at_trajectory_end=True) == []
    assert _violations(joint_trajectory_msg(list(JOINTS), np.zeros(3), np.zeros(3), 0.02, None)) == []
    # A stamped message that ends before it arrives: "ends in the past".
    late = joint_trajectory_msg(list(JOINTS), np.zeros(3), None, 0.02, 99.0)
    assert any("ends in the past" in v for v in _violations(late, now=100.0))
    assert _violations(late, now=99.01) == []
    # Names: count, unknown, duplicate.
    assert _violations(joint_trajectory_msg(["j0", "j1"], np.zeros(2), None, 0.02, None))
    assert _violations(joint_trajectory_msg(["j0", "j1", "x"], np.zeros(3), None, 0.02, None))
    assert any("duplicates" in v for v in _violations(joint_trajectory_msg(["j0", "j1", "j1"], np.zeros(3), None,
                                                                          0.02, None)))
    # Positions finite and inside the limits; field sizes; effort; timing.
    assert any("NaN" in v for v in _violations(joint_trajectory_msg(list(JOINTS), np.array([np.nan, 0, 0]), None,
                                                                    0.02, None)))
    assert any("outside" in v for v in _violations(joint_trajectory_msg(list(JOINTS), np.array([1.5, 0, 0]), None,
                                                                        0.02, None)))
    short = joint_trajectory_msg(list(JOINTS), np.zeros(3), None, 0.02, None)
    short.points[0].velocities = [0.0, 0.0]
    assert any("2 velocities" in v for v in _violations(short))
    effort = joint_trajectory_msg(list(JOINTS), np.zeros(3), None, 0.02, None)
    effort.points[0].effort = [0.0] * 3
    assert any("effort" in v for v in _violations(effort))
    two = joint_trajectory_msg(list(JOINTS), np.zeros(3), None, 0.02, None)
    two.points.append(JointTrajectoryPoint(positions=[0.0] * 3, time_from_start=Duration(sec=0, nanosec=20_000_000)))
    assert any("strictly increasing" in v for v in _violations(two))
    empty = joint_trajectory_msg(list(JOINTS), np.zeros(3), None, 0.02, None)
    empty.points = []
    assert _violations(empty)
    with pytest.raises(ValueError):
        joint_trajectory_msg(list(JOINTS), np.zeros(3), None, 0.0, None)


class SwingPolicy:
    """Joint targets HOME +- OFFSET, switching every 0.6 s (far: the limits shape the motion, and the
    arm is moving whenever a hold starts), gripper closed."""

    def predict_action_chunk(self, batch):
        sign = 1.0 if int(time.time() / 0.6) % 2 else -1.0
        return np.tile(np.append(HOME + sign * OFFSET, 1.0), (1, 8, 1))


def _moved(driver, since: float) -> bool:
    c = driver.commands_since(since)
    return len(c) > 5 and not np.array_equal(c[0], c[-1])


def _check_all(driver, config, params: ControllerParams, use_arrival_time: bool = True) -> int:
    """Every recorded trajectory against the rules; returns how many were checked."""
    with driver._lock:
        recorded = list(driver.trajectories)
    assert recorded, "no trajectory was published"
    bad = []
    for arrival, msg in recorded:
        now = arrival if use_arrival_time else stamp_to_seconds(msg.header.stamp)
        problems = jtc_violations(msg, params, now=now, position_min=config.joint_position_min,
                                  position_max=config.joint_position_max)
        if problems:
            bad.append(problems)
    assert not bad, f"{len(bad)} of {len(recorded)} messages would be rejected, first: {bad[0]}"
    return len(recorded)


def test_every_published_trajectory_is_accepted_by_a_default_controller(tmp_path):
    with running_loop(tmp_path, SwingPolicy(), "joint_trajectory") as (driver, node):
        config = node.config
        assert config.trajectory_stamp == "zero" and config.trajectory_velocities is False  # shipped defaults
        enable_and_move(driver, node)
        count = lambda: len(driver.trajectories)  # noqa: E731
        braking = {}
        # Braking hold on stale observations, then motion again.
        before = count()
        driver.publishing = False
        wait_for(lambda: node.safety.counts["stale_observation"] > 3, 3.0, "stale-observation holds")
        time.sleep(0.4)
        braking["stale"] = count() - before
        driver.publishing = True
        t = time.monotonic()
        wait_for(lambda: _moved(driver, t), 5.0, "motion after fresh observations")
        # Braking hold on e-stop, then resume.
        before = count()
        assert call(driver, "/vla_policy/emergency_stop").success
        time.sleep(0.4)
        braking["estop"] = count() - before
        assert call(driver, "/vla_policy/resume").success
        t = time.monotonic()
        wait_for(lambda: _moved(driver, t), 5.0, "motion after resume")
        # Braking on disable_motion, once up to speed again.
        time.sleep(0.3)
        before = count()
        assert call(driver, "/vla_policy/disable_motion").success
        time.sleep(0.4)
        braking["disable"] = count() - before

        n = _check_all(driver, config, ControllerParams(tuple(config.joint_names)))
        with driver._lock:
            messages = [m for _, m in driver.trajectories]
        # The regression the issue measured: no moving command carried velocities (122 of 122 did).
        assert all(len(m.points) == 1 and not m.points[0].velocities for m in messages)
        assert all(m.header.stamp.sec == 0 and m.header.stamp.nanosec == 0 for m in messages)
        assert all(list(m.joint_names) == list(config.joint_names) for m in messages)
        positions = np.array([m.points[0].positions for m in messages])
        assert np.abs(np.diff(positions, axis=0)).max() > 0, "nothing moved: the check saw no motion"
        # Each hold was entered while moving, so its braking ramp was published and checked above.
        assert all(k > 1 for k in braking.values()), braking
        assert node.safety.counts["stale_observation"] > 0 and n > 40


def test_stamped_trajectories_with_velocities_need_the_controller_parameter(tmp_path):
    """The opt-in mode: stamped with the node's clock and carrying velocities. A default controller
    would refuse its moving commands; with allow_nonzero_velocity_at_trajectory_end it accepts them,
    as long as each arrives before it is due (checked here at the send time: on a loaded machine
    DDS can deliver after the 20 ms period, which is why the default stamp is zero)."""
    with running_loop(tmp_path, SwingPolicy(), "joint_trajectory", trajectory_stamp="now",
                      trajectory_velocities=True) as (driver, node):
        enable_and_move(driver, node)
        config = node.config
        allowed = ControllerParams(tuple(config.joint_names), allow_nonzero_velocity_at_trajectory_end=True)
        _check_all(driver, config, allowed, use_arrival_time=False)
        with driver._lock:
            messages = [m for _, m in driver.trajectories]
        default = ControllerParams(tuple(config.joint_names))
        refused = [m for m in messages if jtc_violations(m, default, now=time.time() - 3600)]
        assert refused, "moving commands with velocities should need allow_nonzero_velocity_at_trajectory_end"
        assert all(m.header.stamp.sec > 0 for m in messages)

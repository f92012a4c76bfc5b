"""The operator's sequence of docs/ROS2.md "Lifecycle as service calls", walked over real DDS:
start (motion disabled) -> enable -> moves -> disable (brakes within the limits, then holds) ->
enable -> e-stop -> resume -> clean shutdown, each step checked on the commands the node publishes."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

try:
    from vla.real_robot.ros_env import import_rclpy

    import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

from dds_loop import (HOME, assert_continuous_from, assert_within_limits, call, running_loop,  # noqa: E402
                      wait_at_rest, wait_for, wait_moving_fast)
from std_msgs.msg import String  # noqa: E402

FAR = np.array([-2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # joint 1 far away: every phase moves it at speed


class FarPolicy:
    def predict_action_chunk(self, batch):
        return np.tile(np.append(HOME + FAR, 1.0), (1, 8, 1))


def moving_after(driver, since: float, n: int = 10) -> bool:
    commands = driver.commands_since(since)
    return len(commands) > n and not np.array_equal(commands[0], commands[-1])


def test_operator_lifecycle_sequence(tmp_path):
    with running_loop(tmp_path, FarPolicy()) as (driver, node):
        config = node.config
        # configure: the node runs, observations flow, nothing is commanded.
        wait_for(lambda: node.safety.counts["not_enabled"] > 3, 8.0, "observations reaching the node")
        assert driver.commands_since(0.0) == [] and driver.gripper_since(0.0) == []
        assert not node.safety.enabled and node.safety.latch is None
        for _ in range(3):  # the first may go out before discovery completes
            driver.instruction_pub.publish(String(data="lift the cube"))
            time.sleep(0.1)

        # activate: enable_motion -> the arm moves, from where it stands.
        start = driver.q.copy()
        enabled_at = time.monotonic()
        assert call(driver, "/vla_policy/enable_motion").success
        wait_moving_fast(driver, node)
        assert_continuous_from(driver, node, enabled_at, start)
        assert driver.commands_since(enabled_at)[-1][0] < start[0] - 0.02, "joint 1 did not head for the target"

        # deactivate: disable_motion -> brakes within the limits to rest, then sends nothing.
        assert call(driver, "/vla_policy/disable_motion").success and not node.safety.enabled
        wait_at_rest(driver)
        held = time.monotonic()
        time.sleep(0.3)
        assert driver.commands_since(held) == [], "commands went on after disable_motion"
        assert_within_limits(config, driver.commands_since(enabled_at))  # the braking ramp too
        assert node.safety.counts["not_enabled"] > 0

        # activate again: from the rest pose.
        rest = driver.q.copy()
        enabled_at = time.monotonic()
        assert call(driver, "/vla_policy/enable_motion").success
        wait_moving_fast(driver, node)
        assert_continuous_from(driver, node, enabled_at, rest)

        # on_error: the e-stop latches, brakes within the limits, then nothing; enable cannot clear it.
        estops = node.safety.emergency_stops
        assert call(driver, "/vla_policy/emergency_stop").success
        assert node.safety.latch == "emergency_stop" and node.safety.emergency_stops == estops + 1
        wait_at_rest(driver)
        held = time.monotonic()
        refused = call(driver, "/vla_policy/enable_motion")
        assert not refused.success and "resume" in refused.message
        time.sleep(0.3)
        assert driver.commands_since(held) == [], "commands went on in the e-stop"
        assert_within_limits(config, driver.commands_since(enabled_at))

        # error recovery: resume -> moves again from the measured pose.
        rest = driver.q.copy()
        resumed_at = time.monotonic()
        assert call(driver, "/vla_policy/resume").success and node.safety.latch is None and node.safety.enabled
        wait_moving_fast(driver, node)
        assert_continuous_from(driver, node, resumed_at, rest)
        assert_within_limits(config, driver.commands_since(0.0))  # the whole session

        # shutdown (what SIGINT to `vla serve-ros` does): the node's threads stop, both nodes leave
        # the graph, nothing more is published and the /rosout handler is off the shared logger.
        threads = list(node.threads._threads)
        assert len(threads) == 4 and all(t.is_alive() for t in threads)  # spin, inference, control, safety
        closing = time.monotonic()
        node.close()
        assert time.monotonic() - closing < 5.0
        assert not any(t.is_alive() for t in threads)
        assert node._rosout not in logging.getLogger("vla.real_robot").handlers
        wait_for(lambda: not {"vla_policy", "vla_policy_safety"} & set(driver.get_node_names()), 10.0,
                 "the policy node and its safety node gone from the graph")
        time.sleep(0.2)  # commands in flight land
        closed = time.monotonic()
        time.sleep(0.3)
        assert driver.commands_since(closed) == [], "a command after shutdown"
        node.close()  # a second close (running_loop's) does nothing

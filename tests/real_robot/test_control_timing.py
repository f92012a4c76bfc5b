"""What keeps the control thread on time (benchmarks/ros_loop.py, docs/DECISIONS.md): the inference
thread's GIL-cycling steps wait while a control tick is due, the chunk conversion offers a pause
before each row's inverse kinematics, and the control thread's short EEVDF slice request."""

from __future__ import annotations

import logging
import random
import threading
import time

import numpy as np
import pytest

try:
    from vla.real_robot.ros_env import import_rclpy

    rclpy = import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

from dds_loop import write_config  # noqa: E402

from vla.real_robot.node_threads import set_fair_slice  # noqa: E402
from vla.real_robot.rate_limited_log import RateLimitedLog  # noqa: E402
from vla.real_robot.robot_config import load_robot_config  # noqa: E402
from vla.real_robot.ros_env import prepare_ros_environment  # noqa: E402
from vla.real_robot.ros_kinematics import EndEffectorDeltaBridge, JointActionBridge  # noqa: E402
from vla.real_robot.ros_node import PolicyNode, PolicyNodeOptions  # noqa: E402


class _NoPolicy:
    def predict_action_chunk(self, batch):
        raise AssertionError("not called: the node is never started")


@pytest.fixture
def idle_node(tmp_path):
    """A policy node whose threads are not started: the test plays the control thread."""
    prepare_ros_environment(localhost_only=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200))
    node = PolicyNode(load_robot_config(write_config(tmp_path)), _NoPolicy(), JointActionBridge(7, 20.0, 50.0),
                      options=PolicyNodeOptions(freeze_gc=False), batch_builder=lambda obs, cams: obs,
                      context=context)
    try:
        yield node
    finally:
        node.close()
        rclpy.shutdown(context=context)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_inference_steps_wait_for_a_due_tick_and_only_then(idle_node):
    node = idle_node
    # No control loop yet (or it stopped long ago): no wait.
    assert _timed(node._yield_to_control) < 0.005
    # The next tick is far off: no wait.
    node._next_deadline = time.perf_counter() + 0.015
    assert _timed(node._yield_to_control) < 0.005

    # The next tick is due within the margin: wait until the control thread reports it finished.
    def finish_tick_after(delay_s: float) -> None:
        time.sleep(delay_s)
        with node._tick_finished:
            node._ticks_done += 1
            node._tick_finished.notify_all()

    node._next_deadline = time.perf_counter() + 0.001
    finisher = threading.Thread(target=finish_tick_after, args=(0.012,))
    finisher.start()
    waited = _timed(node._yield_to_control)
    finisher.join()
    assert 0.010 <= waited < 0.018, waited
    # A tick in progress (deadline just passed, not finished): wait for it too.
    node._next_deadline = time.perf_counter() - 0.002
    finisher = threading.Thread(target=finish_tick_after, args=(0.008,))
    finisher.start()
    waited = _timed(node._yield_to_control)
    finisher.join()
    assert 0.006 <= waited < 0.018, waited
    # A control thread that never reports back costs at most one period, never a hang.
    node._next_deadline = time.perf_counter() + 0.001
    waited = _timed(node._yield_to_control)
    assert node.config.control_period_s * 0.9 <= waited < 0.1, waited


class _StubKinematics:
    """Tool pose fixed at the origin; inverse kinematics returns the start joints."""

    def forward(self, q):
        return np.zeros(3), np.eye(3)

    def inverse(self, q_start, pos, rot):
        return np.array(q_start, dtype=np.float64)


def test_end_effector_chunk_conversion_pauses_before_every_row():
    bridge = EndEffectorDeltaBridge(_StubKinematics(), policy_rate_hz=20.0, control_rate_hz=50.0)
    pauses = []
    chunk = np.zeros((6, 7))
    waypoints = bridge.joint_chunk(chunk, np.zeros(7), pause=lambda: pauses.append(1))
    assert len(pauses) == 6
    np.testing.assert_array_equal(waypoints, bridge.joint_chunk(chunk, np.zeros(7)))  # same result without


def test_fair_slice_request_is_applied_or_declined_quietly():
    result = {}

    def request() -> None:
        result["applied"] = set_fair_slice(200.0, RateLimitedLog(logging.getLogger("test")), "test")
        try:
            with open("/proc/thread-self/sched") as f:
                result["slice"] = next((line.split(":")[1].strip() for line in f if line.startswith("se.slice")),
                                       None)
        except OSError:
            result["slice"] = None

    thread = threading.Thread(target=request)  # in a thread of its own: the test runner keeps its slice
    thread.start()
    thread.join()
    assert isinstance(result["applied"], bool)
    if result["applied"] and result["slice"] is not None:
        assert int(result["slice"]) == 200_000
    assert set_fair_slice(0.0, RateLimitedLog(logging.getLogger("test")), "test") is False

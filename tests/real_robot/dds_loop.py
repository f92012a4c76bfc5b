"""Shared by the DDS loopback tests: a driver node that plays the arm's sensors and records
what the policy node commands, and helpers to wait, call services and run the loop.
Imported only after the test module checked that rclpy imports."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla.real_robot.robot_config import load_robot_config
from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment
from vla.real_robot.ros_kinematics import JointActionBridge
from vla.real_robot.ros_messages import compressed_image_msg, compressed_topic, image_msg, joint_state_msg
from vla.real_robot.ros_node import COMMAND_QOS, SENSOR_QOS, PolicyNode, PolicyNodeOptions

rclpy = import_rclpy()

PANDA = Path(__file__).resolve().parents[2] / "configs" / "robot" / "panda.yaml"
HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])
OFFSET = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])  # far: the limits must shape the motion
TOL = 1e-6
RECORD_QOS = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


class Driver(Node):
    """Plays the arm: publishes joint states and images at a fixed rate, records commands and,
    like an ideal position controller, goes to each command at once (follow=False: a static arm).
    `steps` records, per command, how far it moved the arm: the speed an arm was asked for."""

    def __init__(self, config, context, output_mode: str, sim_clock=None) -> None:
        super().__init__("test_driver", context=context)
        self.config = config
        # sim_clock() -> seconds: stamp in simulated time and publish it on /clock (use_sim_time tests)
        self.sim_clock = sim_clock
        if sim_clock is not None:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.q = HOME.copy()
        self.last_state: tuple[np.ndarray, float] | None = None
        self.follow = True
        self.steps: list[tuple[float, np.ndarray]] = []
        self.publishing = True
        self.publishing_images = True
        self.last_image_stamp = 0.0
        self.commands: list[tuple[float, np.ndarray]] = []
        self.gripper_commands: list[tuple[float, np.ndarray]] = []
        self.trajectories: list[tuple[float, JointTrajectory]] = []  # (wall-clock arrival, message)
        self._lock = threading.Lock()
        self.state_pub = self.create_publisher(JointState, config.topics.joint_states, SENSOR_QOS)
        camera = config.cameras["agentview"]
        self.compressed = camera.compressed
        if camera.compressed:
            self.image_pub = self.create_publisher(CompressedImage, compressed_topic(camera.topic), SENSOR_QOS)
        else:
            self.image_pub = self.create_publisher(Image, camera.topic, SENSOR_QOS)
        self.instruction_pub = self.create_publisher(String, config.topics.instruction, COMMAND_QOS)
        if output_mode == "joint_trajectory":
            self.create_subscription(JointTrajectory, config.topics.joint_trajectory, self._record_trajectory,
                                     RECORD_QOS)
        else:
            self.create_subscription(Float64MultiArray, config.topics.forward_position,
                                     lambda m: self._record(m.data), RECORD_QOS)
        self.create_subscription(Float64MultiArray, config.gripper.topic,
                                 self._record_gripper, RECORD_QOS)
        # Smooth content, so a jpeg round trip stays within a few grey levels.
        self.image = np.zeros((64, 64, 3), np.uint8)
        self.image[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 3
        self.image[..., 1] = 90
        self.image[..., 2] = np.arange(64, dtype=np.uint8)[:, None] * 2
        self.create_timer(0.01, self._tick)

    def _record_trajectory(self, msg: JointTrajectory) -> None:
        with self._lock:
            self.trajectories.append((time.time(), msg))
        self._record(msg.points[0].positions)

    def _record(self, positions) -> None:
        q = np.array(positions)
        with self._lock:
            now = time.monotonic()
            self.commands.append((now, q))
            if self.follow:
                self.steps.append((now, q - self.q))
                self.q = q

    def teleport(self, q) -> None:
        """Move the arm without a command (pushed by hand, restarted elsewhere)."""
        with self._lock:
            self.q = np.array(q, dtype=np.float64)

    def max_step_speed(self, since: float = 0.0) -> np.ndarray:
        """Per joint, the largest speed (rad/s) a single command asked of the arm since `since`."""
        with self._lock:
            steps = [np.abs(d) for t, d in self.steps if t >= since]
        return np.max(steps, axis=0) / self.config.control_period_s if steps else np.zeros(len(self.q))

    def _record_gripper(self, msg) -> None:
        with self._lock:
            self.gripper_commands.append((time.monotonic(), np.array(msg.data)))

    def _tick(self) -> None:
        if not self.publishing:
            return
        with self._lock:
            # Stamped when read, as a joint_state_broadcaster does: a thread preempted between
            # taking the time and reading the pose (50 ms happen on this loaded machine) stamped
            # a later pose with an earlier time, which looked like a jump to the policy node.
            q = self.q.copy()
            now = time.time() if self.sim_clock is None else self.sim_clock()
            self.last_state = (q, now)  # what the arm last reported (a flood can repeat it)
        if self.sim_clock is not None:
            from rosgraph_msgs.msg import Clock

            from vla.real_robot.ros_messages import seconds_to_stamp

            self.clock_pub.publish(Clock(clock=seconds_to_stamp(now)))
        self.state_pub.publish(joint_state_msg(self.config.joint_names, q, None, now))
        if self.publishing_images:
            msg = compressed_image_msg(self.image, now) if self.compressed else image_msg(self.image, now)
            self.image_pub.publish(msg)
            self.last_image_stamp = now

    def commands_since(self, t: float) -> list[np.ndarray]:
        with self._lock:
            return [q for stamp, q in self.commands if stamp >= t]

    def gripper_since(self, t: float) -> list[np.ndarray]:
        with self._lock:
            return [q for stamp, q in self.gripper_commands if stamp >= t]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def call(node: Node, name: str, timeout_s: float = 5.0):
    client = node.create_client(Trigger, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} not available"
        future = client.call_async(Trigger.Request())
        wait_for(future.done, timeout_s, f"reply from {name}")
        return future.result()
    finally:
        node.destroy_client(client)


def write_config(tmp_path: Path, **overrides) -> Path:
    raw = yaml.safe_load(PANDA.read_text())
    raw.update(overrides)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@contextlib.contextmanager
def running_loop(tmp_path: Path, policy, output_mode: str = "joint_trajectory", options=None, batch_builder=None,
                 make_safety=None, latched_instruction: str | None = None, sim_clock=None, **overrides):
    """(driver, policy node) talking over DDS in a private domain; torn down in any case.
    make_safety(config) -> SafetyLayer replaces the node's default one (no workspace check).
    latched_instruction: published on a transient-local topic before the policy node exists."""
    prepare_ros_environment(localhost_only=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200))
    # A generous age: this 2-core machine is shared, and the stale tests stop the sensors outright.
    overrides = {"output_mode": output_mode, "max_observation_age_s": 0.3, **overrides}
    config = load_robot_config(write_config(tmp_path, **overrides))
    node = driver = executor = spinner = latcher = None
    try:
        if latched_instruction is not None:
            from vla.real_robot.ros_node import LATCHED_QOS

            latcher = Node("test_latcher", context=context)
            latcher.create_publisher(String, config.topics.instruction, LATCHED_QOS).publish(
                String(data=latched_instruction))
        node = PolicyNode(config, policy, JointActionBridge(7, policy_rate_hz=20.0, control_rate_hz=50.0),
                          options=options or PolicyNodeOptions(), batch_builder=batch_builder, context=context,
                          safety=make_safety(config) if make_safety is not None else None)
        driver = Driver(config, context, output_mode, sim_clock)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(driver)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        node.start()
        spinner.start()
        yield driver, node
    finally:
        if node is not None:
            node.close()
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if driver is not None:
            driver.destroy_node()
        if latcher is not None:
            latcher.destroy_node()
        rclpy.shutdown(context=context)
        if spinner is not None:
            spinner.join(2.0)


def enable_and_move(driver: Driver, node: PolicyNode, commands: int = 20) -> None:
    """Send the instruction, enable motion, wait for more than `commands` commands (fewer when the
    motion soon stops at a hold: a hold at rest sends nothing)."""
    for _ in range(3):  # the first instruction may go out before discovery completes
        driver.instruction_pub.publish(String(data="lift the cube"))
        time.sleep(0.1)
    assert call(driver, "/vla_policy/enable_motion").success
    wait_for(lambda: len(driver.commands_since(0.0)) > commands, 8.0, "commands after enabling motion")


def assert_within_limits(config, commands: list[np.ndarray]) -> None:
    q = np.stack(commands)
    dt = config.control_period_s
    vmax, amax = np.array(config.joint_velocity_max), np.array(config.joint_acceleration_max)
    assert np.all(q >= np.array(config.joint_position_min) - TOL)
    assert np.all(q <= np.array(config.joint_position_max) + TOL)
    v = np.diff(q, axis=0) / dt
    assert np.all(np.abs(v) <= vmax + 1e-6), f"velocity {np.abs(v).max(axis=0)} beyond {vmax}"
    # Commands travel reliably with a deep reader queue (RECORD_QOS), so consecutive ones are one period apart.
    a = np.diff(v, axis=0) / dt
    assert np.all(np.abs(a) <= amax + 1e-3), f"acceleration {np.abs(a).max(axis=0)} beyond {amax}"


def assert_still(driver: Driver, since: float, what: str) -> None:
    """No command since `since` moved the arm: a hold brakes to rest, then sends nothing (or the
    same point)."""
    held = driver.commands_since(since)
    assert all(np.array_equal(held[0], q) for q in held), f"the arm moved {what}"


def speed_limit(node) -> np.ndarray:
    return np.array(node.config.joint_velocity_max) * (1 + 1e-6) + 1e-6


def start_of_rest_bound(node) -> np.ndarray:
    """How far the first command may lie from the pose it starts at rest from: one period at full acceleration."""
    dt = node.config.control_period_s
    return np.array(node.config.joint_acceleration_max) * dt * dt + 1e-6


def wait_moving_fast(driver, node, speed: float = 1.0) -> None:
    """Until joint 1 moves faster than `speed` rad/s (so that a stop must brake)."""
    dt = node.config.control_period_s

    def fast():
        c = driver.commands_since(time.monotonic() - 0.1)
        return len(c) > 1 and abs(c[-1][0] - c[-2][0]) / dt > speed

    wait_for(fast, 5.0, f"joint 1 moving faster than {speed} rad/s")


def wait_at_rest(driver, quiet_s: float = 0.3, timeout_s: float = 5.0) -> None:
    """Until no command moved the arm for `quiet_s` (a hold that braked to rest sends nothing more)."""
    def rested():
        recent = driver.commands_since(time.monotonic() - quiet_s)
        return all(np.array_equal(q, driver.q) for q in recent)

    wait_for(rested, timeout_s, f"no motion commanded for {quiet_s} s")


def assert_continuous_from(driver, node, since: float, measured: np.ndarray) -> None:
    """The first command after `since` starts at the measured pose (one period of acceleration from
    rest at most), and no command since asked the arm for more than its velocity limit."""
    after = driver.commands_since(since)
    assert np.all(np.abs(after[0] - measured) <= start_of_rest_bound(node)), after[0] - measured
    assert np.all(driver.max_step_speed(since) <= speed_limit(node)), driver.max_step_speed(since)
    assert_within_limits(node.config, after)

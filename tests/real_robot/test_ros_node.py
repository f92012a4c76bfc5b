"""The policy node over real DDS on loopback: a driver node plays the arm's sensors and
records the commands; no part of rclpy is mocked."""

from __future__ import annotations

import time

import numpy as np
import pytest

try:
    from vla.real_robot.ros_env import import_rclpy

    import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

import yaml  # noqa: E402
from dds_loop import (HOME, OFFSET, PANDA, assert_still, assert_within_limits, call, enable_and_move,  # noqa: E402
                      running_loop, wait_for)
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vla.real_robot.ros_messages import compressed_image_msg, image_msg, seconds_to_stamp  # noqa: E402


class OffsetPolicy:
    """Joint targets HOME + OFFSET for every row, then the gripper action; counts its calls."""

    def __init__(self, horizon: int = 8) -> None:
        self.horizon = horizon
        self.calls = 0
        self.gripper = 1.0  # close
        self.images: list[np.ndarray] = []

    def predict_action_chunk(self, batch):
        self.calls += 1
        image = batch["observation.images.agentview"]
        assert image.shape == (1, 64, 64, 3)
        assert batch["task"] == ["lift the cube"]
        if len(self.images) < 3:
            self.images.append(np.asarray(image[0]))
        return np.tile(np.append(HOME + OFFSET, self.gripper), (1, self.horizon, 1))


@pytest.fixture(params=["joint_trajectory", "forward_position"])
def loop(request, tmp_path):
    """(driver, policy node, policy) over DDS in a private domain."""
    policy = OffsetPolicy()
    with running_loop(tmp_path, policy, request.param) as (driver, node):
        yield driver, node, policy


def test_nothing_moves_until_enabled_then_commands_respect_limits(loop):
    driver, node, policy = loop
    wait_for(lambda: node.safety.counts["not_enabled"] > 5, 8.0, "observations reaching the node")
    assert driver.commands_since(0.0) == [], "a command was sent before the operator enabled motion"
    assert driver.gripper_since(0.0) == [], "a gripper command was sent before the operator enabled motion"
    enable_and_move(driver, node)
    wait_for(lambda: len(driver.commands_since(0.0)) > 60, 8.0, "a second of commands")
    commands = driver.commands_since(0.0)
    assert policy.calls > 0 and node.chunks_submitted > 0, (node.inference_errors, node.rejected, node.safety.counts)
    assert_within_limits(node.config, commands)
    # Joint 1 heads to +1 rad and joint 7 to -0.2 rad, limited to 2.175 / 2.61 rad/s.
    assert commands[-1][0] > HOME[0] + 0.05
    assert commands[-1][6] < HOME[6] - 0.05
    assert node.safety.counts["velocity_limit"] + node.safety.counts["acceleration_limit"] > 0
    # The policy's gripper action (+1) reached the gripper topic as the configured closed positions.
    wait_for(lambda: driver.gripper_since(0.0), 3.0, "a gripper command")
    closed = np.array(node.config.gripper.closed_positions)
    assert all(np.array_equal(g, closed) for g in driver.gripper_since(0.0))
    assert node.gripper.changes == 1


def test_stale_observations_hold_and_estop_stops(loop):
    driver, node, policy = loop
    enable_and_move(driver, node)
    driver.publishing = False
    # Within the age limit plus a few periods the arm holds: it brakes to rest (at most 0.3 s at
    # these limits), then nothing moves it.
    wait_for(lambda: node.safety.counts["stale_observation"] > 3, 3.0, "stale-observation holds")
    time.sleep(0.4)
    rested = time.monotonic()
    time.sleep(0.3)
    assert_still(driver, rested, "on stale observations")

    driver.publishing = True
    wait_for(lambda: (lambda c: len(c) > 5 and not np.array_equal(c[0], c[-1]))(
        driver.commands_since(time.monotonic() - 0.2)), 5.0, "motion after fresh observations")

    wait_for(lambda: node.gripper.closed_state is True, 3.0, "the gripper closing")
    response = call(driver, "/vla_policy/emergency_stop")
    assert response.success and node.safety.estopped
    policy.gripper = -1.0  # the policy now wants to open: an e-stop must not drop what the gripper holds
    time.sleep(0.4)  # braking to rest
    estopped_at = time.monotonic()
    time.sleep(0.4)
    assert_still(driver, estopped_at, "while e-stopped")
    closed = np.array(node.config.gripper.closed_positions)
    assert all(np.array_equal(g, closed) for g in driver.gripper_since(estopped_at)), "gripper moved in e-stop"
    assert node.gripper.closed_state is True
    assert not call(driver, "/vla_policy/enable_motion").success, "enable must not clear a latched e-stop"
    assert call(driver, "/vla_policy/resume").success
    wait_for(lambda: (lambda c: len(c) > 5 and not np.array_equal(c[0], c[-1]))(
        driver.commands_since(time.monotonic() - 0.2)), 5.0, "motion after resume")
    opened = np.array(node.config.gripper.open_positions)
    wait_for(lambda: any(np.array_equal(g, opened) for g in driver.gripper_since(0.0)), 3.0,
             "the gripper opening after resume")


def test_malformed_messages_are_dropped_and_the_node_lives_on(loop):
    driver, node, _ = loop
    enable_and_move(driver, node)
    now = time.time()
    bad_count = JointState(name=["panda_joint1"], position=[0.1])
    bad_count.header.stamp = seconds_to_stamp(now)
    unnamed = JointState(position=[0.0] * 3)
    bad_encoding = image_msg(driver.image, now)
    bad_encoding.encoding = "mono8"
    wrong_size = image_msg(np.zeros((32, 48, 3), np.uint8), now)
    truncated = image_msg(driver.image, now)
    truncated.data = bytes(truncated.data)[:100]
    bad = [(driver.state_pub, bad_count), (driver.state_pub, unnamed), (driver.image_pub, bad_encoding),
           (driver.image_pub, wrong_size), (driver.image_pub, truncated),
           (driver.instruction_pub, String(data="   "))]
    # Sensor topics keep only the latest sample: send each kind on its own, a few times.
    for publisher, msg in bad:
        for _ in range(5):
            publisher.publish(msg)
            time.sleep(0.01)
    expected = {"joint_state_names", "joint_state_count", "image_encoding_agentview", "image_size_agentview",
                "instruction_empty"}
    wait_for(lambda: expected <= set(node.rejected), 5.0, f"rejections of kinds {expected}, got {node.rejected}")
    # Still alive and commanding from the good messages.
    n = len(driver.commands_since(0.0))
    wait_for(lambda: len(driver.commands_since(0.0)) > n + 20, 5.0, "commands after the malformed burst")
    assert all(node.threads.alive)
    assert node.inference_errors == 0


def test_stale_camera_holds_while_joint_states_continue(loop):
    """A camera that stops while joint states keep coming must hold the arm: the policy would act
    on an old picture of the world. Measures the watchdog: last image stamp -> first held command."""
    driver, node, _ = loop
    enable_and_move(driver, node)
    stale_before = node.safety.counts["stale_observation"]
    driver.publishing_images = False
    time.sleep(0.05)  # let an image already in flight land
    last_image = driver.last_image_stamp
    wait_for(lambda: node.safety.counts["stale_observation"] > stale_before, 3.0, "a stale-image hold")
    hold_after_s = time.time() - last_image
    time.sleep(0.4)  # braking to rest
    held_at = time.monotonic()
    time.sleep(0.3)
    assert_still(driver, held_at, "on a stale image")
    age = node.config.max_observation_age_s
    # The hold comes one control period after the age limit; the slack is for a loaded 2-core machine.
    assert age <= hold_after_s < age + 0.25, f"held {hold_after_s:.3f} s after the last image (limit {age} s)"
    print(f"stale image -> hold after {hold_after_s * 1e3:.0f} ms (age limit {age * 1e3:.0f} ms)")
    driver.publishing_images = True
    wait_for(lambda: (lambda c: len(c) > 5 and not np.array_equal(c[0], c[-1]))(
        driver.commands_since(time.monotonic() - 0.2)), 5.0, "motion after the camera came back")


def test_compressed_images_drive_the_policy_and_bad_ones_are_dropped(tmp_path):
    camera = {"topic": "/cameras/agentview/image_raw", "height": 64, "width": 64, "compressed": True}
    policy = OffsetPolicy()
    with running_loop(tmp_path, policy, cameras={"agentview": camera}) as (driver, node):
        enable_and_move(driver, node)
        # The jpeg round trip reaches the policy as the driver's picture, give or take compression.
        error = np.abs(policy.images[0].astype(int) - driver.image.astype(int))
        assert error.mean() < 3.0, error.mean()
        now = time.time()
        tiff = compressed_image_msg(driver.image, now)
        tiff.format = "tiff"
        garbage = compressed_image_msg(driver.image, now)
        garbage.data = b"\xff\xd8 not really a jpeg" * 10
        wrong_size = compressed_image_msg(np.zeros((32, 48, 3), np.uint8), now, fmt="png")
        for msg in (tiff, garbage, wrong_size):
            for _ in range(5):
                driver.image_pub.publish(msg)
                time.sleep(0.01)
        expected = {"image_encoding_agentview", "image_decode_agentview", "image_size_agentview"}
        wait_for(lambda: expected <= set(node.rejected), 5.0, f"rejections {expected}, got {node.rejected}")
        n = len(driver.commands_since(0.0))
        wait_for(lambda: len(driver.commands_since(0.0)) > n + 20, 5.0, "commands after the bad images")
        assert all(node.threads.alive) and node.inference_errors == 0


def test_status_topic_reports_permission_interventions_staleness_and_timing(loop):
    import json

    from vla.real_robot.ros_node import COMMAND_QOS

    driver, node, policy = loop
    statuses: list[dict] = []
    driver.create_subscription(String, "/vla_policy/status", lambda msg: statuses.append(json.loads(msg.data)),
                               COMMAND_QOS)
    wait_for(lambda: statuses and statuses[-1]["interventions"].get("not_enabled", 0) > 0, 8.0,
             "a status with the not-enabled holds")
    first = statuses[-1]
    assert first["motion_enabled"] is False and first["latched"] is None and first["commands_published"] == 0
    assert set(first["input_age_ms"]) == {"joint_states", "agentview"}
    enable_and_move(driver, node)
    wait_for(lambda: statuses[-1]["commands_published"] > 0, 5.0, "a status after commands")
    moving = statuses[-1]
    assert moving["motion_enabled"] is True and moving["control_jitter_ms"]["p99"] is not None
    assert moving["inference_ms"]["p50"] is not None
    driver.publishing = False
    wait_for(lambda: "joint_states" in statuses[-1]["stale_inputs"], 4.0, "the joint states reported stale")
    assert statuses[-1]["interventions"].get("stale_observation", 0) > 0
    assert call(driver, "/vla_policy/emergency_stop").success
    wait_for(lambda: statuses[-1]["latched"] == "emergency_stop", 5.0, "the e-stop latch in the status")


def test_a_latched_instruction_reaches_a_node_started_after_it_and_interventions_reach_rosout(tmp_path):
    """The safety layer is built as `vla serve-ros` builds it (ros_serve.build_safety_layer), so its
    interventions reach /rosout on the product path, not only through a layer the test wired up."""
    from rcl_interfaces.msg import Log

    from vla.real_robot.ros_node import COMMAND_QOS
    from vla.real_robot.ros_serve import build_safety_layer

    topics = yaml.safe_load(PANDA.read_text())["topics"]
    with running_loop(tmp_path, OffsetPolicy(), latched_instruction="lift the cube", make_safety=build_safety_layer,
                      topics={**topics, "instruction_durability": "transient_local"}) as (driver, node):
        assert node.safety.forward_kinematics is not None  # serve-ros's layer, workspace check included
        wait_for(lambda: node._instruction == "lift the cube", 5.0, "the latched instruction")
        logs: list[Log] = []
        driver.create_subscription(Log, "/rosout", logs.append, COMMAND_QOS)

        def lines(level: int, text: str) -> list[Log]:
            return [m for m in list(logs) if m.name == "vla_policy" and m.level == level and text in m.msg]

        # A hold intervention (motion not enabled yet), logged once a second at WARN.
        wait_for(lambda: lines(Log.WARN, "[not_enabled] motion not enabled"), 10.0,
                 "the not-enabled hold at WARN on /rosout")
        # A real e-stop through the operator's service: the latch is logged at ERROR.
        assert call(driver, "/vla_policy/emergency_stop").success and node.safety.latch == "emergency_stop"
        wait_for(lambda: lines(Log.ERROR, "[emergency_stop] emergency_stop latched: service call"), 10.0,
                 "the e-stop latch at ERROR on /rosout")
        bad = JointState(name=list(node.config.joint_names), position=[0.0] * 7)  # unstamped: dropped, logged

        def logged() -> bool:  # the log is rate-limited to a line a second: keep the fault up until one arrives
            driver.state_pub.publish(bad)
            time.sleep(0.05)
            return any("dropped message" in m.msg and m.name == "vla_policy" for m in logs)

        wait_for(logged, 10.0, "the dropped message on /rosout")
        # Each line once: the safety layer's logger reaches the /rosout handler through vla.real_robot only.
        assert len(lines(Log.ERROR, "[emergency_stop] emergency_stop latched")) == 1


def test_rosout_handler_also_goes_on_a_safety_logger_outside_the_package_tree():
    import logging

    from dds_loop import PANDA as panda_yaml

    from vla.real_robot.rate_limited_log import RateLimitedLog
    from vla.real_robot.robot_config import load_robot_config
    from vla.real_robot.ros_node import _rosout_loggers
    from vla.real_robot.safety import SafetyLayer

    config = load_robot_config(panda_yaml)
    package = logging.getLogger("vla.real_robot")
    inside = SafetyLayer(config, log=RateLimitedLog(logging.getLogger("vla.real_robot.safety")))
    assert _rosout_loggers(inside) == [package]
    outside_logger = logging.getLogger("integrator.safety")
    assert _rosout_loggers(SafetyLayer(config, log=RateLimitedLog(outside_logger))) == [package, outside_logger]
    quiet = logging.getLogger("vla.real_robot.quiet_safety")
    quiet.propagate = False
    try:
        assert _rosout_loggers(SafetyLayer(config, log=RateLimitedLog(quiet))) == [package, quiet]
    finally:
        quiet.propagate = True


def _service(node, srv_type, name: str, request, timeout_s: float = 5.0):
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} not available"
        future = client.call_async(request)
        wait_for(future.done, timeout_s, f"reply from {name}")
        return future.result()
    finally:
        node.destroy_client(client)


def test_robot_config_is_visible_as_read_only_parameters(loop):
    from rcl_interfaces.srv import DescribeParameters, ListParameters
    from rclpy.parameter import Parameter

    driver, node, policy = loop
    assert node.get_parameter("control_rate_hz").value == node.config.control_rate_hz
    assert node.get_parameter("joint_names").value == list(node.config.joint_names)
    assert node.get_parameter("joint_velocity_max").value == [float(v) for v in node.config.joint_velocity_max]
    assert node.get_parameter("topics.instruction").value == node.config.topics.instruction
    assert node.get_parameter("gripper.close_threshold").value == node.config.gripper.close_threshold
    result = node.set_parameters([Parameter("joint_velocity_max", value=[100.0] * 7)])[0]
    assert not result.successful and "read-only" in result.reason
    assert node.safety.limits.velocity_max.max() < 100.0
    # The node's operational options too, read-only.
    assert node.get_parameter("node.ensemble_decay").value == node.options.ensemble_decay
    assert node.get_parameter("node.status_rate_hz").value == node.options.status_rate_hz
    assert node.get_parameter("node.min_inference_interval_s").value == node.options.min_inference_interval_s
    assert node.get_parameter("node.temporal_ensembling").value is node.options.temporal_ensembling
    assert node.get_parameter("node.policy_rate_hz").value == 20.0
    assert not node.set_parameters([Parameter("node.ensemble_decay", value=0.5)])[0].successful
    assert node.executor_buffer.ensemble_decay == node.options.ensemble_decay

    # What `ros2 param describe` sees, over DDS: a description of its own for every parameter.
    names = _service(driver, ListParameters, "/vla_policy/list_parameters", ListParameters.Request()).result.names
    assert {"joint_velocity_max", "cameras.agentview.topic", "node.ensemble_decay", "node.status_rate_hz",
            "node.min_inference_interval_s", "node.executor", "node.realtime_priority"} <= set(names)
    ours = [n for n in names if n not in ("use_sim_time", "start_type_description_service")]  # rclpy's own
    described = _service(driver, DescribeParameters, "/vla_policy/describe_parameters",
                         DescribeParameters.Request(names=ours)).descriptors
    by_name = {d.name: d for d in described}
    assert set(by_name) == set(ours)
    for name, d in by_name.items():
        assert d.read_only, name
        assert len(d.description) > 30 and "not described" not in d.description, (name, d.description)
        assert "read-only" in d.additional_constraints, (name, d.additional_constraints)
    texts = [d.description for d in by_name.values()]
    assert len(set(texts)) == len(texts), "two parameters share a description"
    assert "rad/s" in by_name["joint_velocity_max"].description
    assert "rad/s^2" in by_name["joint_acceleration_max"].description
    assert "'agentview'" in by_name["cameras.agentview.topic"].description
    assert "exp(-ensemble_decay" in by_name["node.ensemble_decay"].description
    assert "~/status" in by_name["node.status_rate_hz"].description


def test_serve_ros_flags_are_read_only_parameters(tmp_path):
    from vla.real_robot.ros_node import PolicyNodeOptions

    flags = {"policy": "ws://gpu-host:8000", "robot": "configs/robot/panda.yaml", "action_space": "joint",
             "device": "cpu", "enable_on_start": False, "inference_process": True, "not_a_flag": 1}
    with running_loop(tmp_path, OffsetPolicy(), options=PolicyNodeOptions(serve_ros_arguments=flags)) as (_, node):
        assert node.get_parameter("serve_ros.policy").value == "ws://gpu-host:8000"
        assert node.get_parameter("serve_ros.action_space").value == "joint"
        assert node.get_parameter("serve_ros.inference_process").value is True
        assert not node.has_parameter("serve_ros.not_a_flag")
        assert node.describe_parameter("serve_ros.robot").read_only
        assert "robot config YAML" in node.describe_parameter("serve_ros.robot").description


def test_every_config_field_option_and_serve_ros_flag_has_a_parameter_description():
    """A robot config key, node option or serve-ros flag added without a description fails here,
    not at the operator's `ros2 param describe`."""
    import dataclasses
    import typing

    from vla.config import ServeRosConfig
    from vla.real_robot import robot_config
    from vla.real_robot.ros_node import PolicyNodeOptions
    from vla.real_robot.ros_parameters import (CONFIG_DESCRIPTIONS, OPTION_DESCRIPTIONS, SERVE_ROS_DESCRIPTIONS,
                                               config_description)

    def leaves(cls, prefix=""):
        hints = typing.get_type_hints(cls, vars(robot_config))
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            inner = [a for a in typing.get_args(kind) if dataclasses.is_dataclass(a)]
            if f.name == "cameras":
                yield from leaves(robot_config.CameraConfig, f"{prefix}cameras.agentview.")
            elif dataclasses.is_dataclass(kind) or inner:
                yield from leaves(inner[0] if inner else kind, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    config_keys = list(leaves(robot_config.RobotConfig))
    missing = [k for k in config_keys if config_description(k) is None]
    assert not missing, f"robot config keys without a parameter description: {missing}"
    unused = set(CONFIG_DESCRIPTIONS) - {k.replace("cameras.agentview.", "cameras.{camera}.") for k in config_keys}
    assert not unused, f"descriptions of no config key: {unused}"
    not_parameters = {"node_name", "use_sim_time", "serve_ros_arguments"}  # the node's name, ROS's own, the flags
    options = {f.name for f in dataclasses.fields(PolicyNodeOptions)} - not_parameters
    assert options <= set(OPTION_DESCRIPTIONS), options - set(OPTION_DESCRIPTIONS)
    # domain_id picks the DDS domain; realtime_priority, use_sim_time and policy_rate_hz are node.* / ROS's own.
    flags = {f.name for f in dataclasses.fields(ServeRosConfig)} - {"domain_id", "realtime_priority", "use_sim_time",
                                                                      "policy_rate_hz"}
    assert flags == set(SERVE_ROS_DESCRIPTIONS), flags ^ set(SERVE_ROS_DESCRIPTIONS)


def test_use_sim_time_takes_stamps_from_the_simulated_clock(tmp_path):
    from vla.real_robot.ros_node import PolicyNodeOptions

    start = time.monotonic()

    def sim_clock() -> float:  # simulated time far from the wall clock: wall-clock stamps would be stale
        return 1000.0 + (time.monotonic() - start)

    with running_loop(tmp_path, OffsetPolicy(), options=PolicyNodeOptions(use_sim_time=True),
                      sim_clock=sim_clock) as (driver, node):
        wait_for(lambda: abs(node.clock() - sim_clock()) < 0.5, 5.0, "the node's clock following /clock")
        enable_and_move(driver, node)  # fresh inputs in simulated time: the arm moves
    with running_loop(tmp_path, OffsetPolicy(), sim_clock=sim_clock) as (driver, node):  # without it: stale
        driver.instruction_pub.publish(String(data="lift the cube"))
        call(driver, "/vla_policy/enable_motion")
        time.sleep(1.5)
        assert driver.commands_since(0.0) == [] and node.safety.counts["stale_observation"] > 0, node.safety.counts

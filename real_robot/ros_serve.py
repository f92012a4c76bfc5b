"""Entry points behind `vla serve-ros` and `vla sim-arm`: build the node, spin until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from vla.real_robot.robot_config import RobotConfig, load_robot_config

ACTION_SPACES = ("end_effector_delta", "joint")


def load_policy(policy: str, device: str = "cpu") -> Any:
    """A local checkpoint directory, or ws://host:port of a PolicyServer (robots without a GPU)."""
    if policy.startswith(("ws://", "wss://")):
        from vla.real_robot.policy_client import PolicyClient

        return PolicyClient(policy)
    from vla.policy.flow_vla import FlowVLAPolicy

    model = FlowVLAPolicy.from_pretrained(policy, map_location=device)
    model.eval()
    return model


def make_bridge(config: RobotConfig, action_space: str, policy_rate_hz: float, kinematics_task: str = "lift"):
    """The chunk-to-joints bridge and, for end-effector policies, the kinematics (for the workspace box)."""
    from vla.real_robot.ros_kinematics import EndEffectorDeltaBridge, JointActionBridge, panda_kinematics

    if action_space == "joint":
        return JointActionBridge(config.num_joints, policy_rate_hz, config.control_rate_hz), None
    if action_space != "end_effector_delta":
        raise ValueError(f"action_space {action_space!r} is not one of {ACTION_SPACES}")
    if config.num_joints != 7:
        raise ValueError(f"end-effector policies need the Panda kinematics (7 joints); {config.name} has "
                         f"{config.num_joints}: use action_space='joint'")
    kinematics = panda_kinematics(kinematics_task)
    return EndEffectorDeltaBridge(kinematics, policy_rate_hz, config.control_rate_hz), kinematics


def serve_ros(policy: str, robot: str, action_space: str = "end_effector_delta", policy_rate_hz: float = 20.0,
              device: str = "cpu", domain_id: int | None = None, enable_on_start: bool = False,
              stop: threading.Event | None = None) -> None:
    """Run the policy node until Ctrl-C/SIGTERM (or `stop` is set). Motion waits for ~/enable_motion
    unless enable_on_start (for simulation only)."""
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    config = load_robot_config(robot)  # config errors surface before anything heavy loads
    prepare_ros_environment(domain_id)
    rclpy = import_rclpy()
    bridge, kinematics = make_bridge(config, action_space, policy_rate_hz)
    model = load_policy(policy, device)
    from vla.real_robot.ros_node import PolicyNode
    from vla.real_robot.safety import SafetyLayer

    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        fk = kinematics.position_in_base if kinematics is not None else None
        # The workspace box is checked on the kinematics model's tool point, in the base frame.
        safety = SafetyLayer(config, forward_kinematics=fk)
        node = PolicyNode(config, model, bridge, safety=safety, context=context).start()
        if enable_on_start:
            node.safety.enable()
        _wait_for_shutdown(stop)
    finally:
        if node is not None:
            node.close()
        rclpy.shutdown(context=context)


def run_sim_arm(robot: str, task: str = "lift", state_rate_hz: float = 100.0, image_rate_hz: float = 10.0,
                domain_id: int | None = None, stop: threading.Event | None = None) -> None:
    """Run the MuJoCo simulated arm node until Ctrl-C/SIGTERM (or `stop` is set)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    config = load_robot_config(robot)
    prepare_ros_environment(domain_id)
    rclpy = import_rclpy()
    from vla.real_robot.sim_arm import SimArmNode

    context = rclpy.Context()
    rclpy.init(context=context)
    arm = None
    try:
        arm = SimArmNode(config, task=task, state_rate_hz=state_rate_hz, image_rate_hz=image_rate_hz,
                         context=context).start()
        _wait_for_shutdown(stop)
    finally:
        if arm is not None:
            arm.close()
        rclpy.shutdown(context=context)


def _wait_for_shutdown(stop: threading.Event | None) -> None:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("vla.real_robot").info("running; Ctrl-C to stop")
    while not stop.wait(0.5):
        pass


"""Entry points behind `vla serve-ros` and `vla sim-arm`: build the node, spin until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

from vla.real_robot.robot_config import RobotConfig, RobotConfigError, load_robot_config

ACTION_SPACES = ("end_effector_delta", "joint")
REALTIME_SWITCH_INTERVAL_S = 0.0005


def load_policy(policy: str, device: str = "cpu") -> Any:
    """A local checkpoint directory, or ws://host:port of a PolicyServer (robots without a GPU)."""
    if policy.startswith(("ws://", "wss://")):
        from vla.real_robot.policy_client import PolicyClient

        return PolicyClient(policy)
    from vla.policy.registry import load_policy as load_checkpoint

    model = load_checkpoint(policy, map_location=device)
    model.eval()
    return model


def make_bridge(config: RobotConfig, action_space: str, policy_rate_hz: float, kinematics_task: str = "lift"):
    """The chunk-to-joints bridge and, for end-effector policies, the kinematics (also reused for the box)."""
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


def workspace_check(config: RobotConfig, kinematics=None, kinematics_task: str = "lift"):
    """The forward kinematics the safety layer checks the workspace box with: the tool point and the
    config's workspace.links, in the base frame; for joint policies too. None (with a loud warning)
    when the config says workspace.kinematics: none."""
    if config.workspace.kinematics == "none":
        logging.getLogger("vla.real_robot").warning(
            "workspace.kinematics is 'none': the workspace box is NOT checked; only joint limits bound the motion")
        return None
    from vla.real_robot.ros_kinematics import panda_kinematics

    kinematics = kinematics or panda_kinematics(kinematics_task)
    try:
        ids = kinematics.body_ids(list(config.workspace.links))
    except ValueError as exc:
        raise RobotConfigError(f"workspace.links: {exc}") from exc
    return lambda q: kinematics.points_in_base(q, ids)


def build_safety_layer(config: RobotConfig, kinematics=None, kinematics_task: str = "lift"):
    """The safety layer `vla serve-ros` runs (tests build theirs with it too): the workspace check
    from the config. Its interventions are logged under vla.real_robot.safety, which the policy
    node publishes on /rosout (PolicyNode checks that the logger reaches its handler)."""
    from vla.real_robot.rate_limited_log import RateLimitedLog
    from vla.real_robot.safety import SafetyLayer

    return SafetyLayer(config, forward_kinematics=workspace_check(config, kinematics, kinematics_task),
                       log=RateLimitedLog(logging.getLogger("vla.real_robot.safety")))


def policy_shape(model) -> dict | None:
    """cameras / state_dim / action_dim of a local policy (its config) or a remote one (the server's
    hello metadata); None when the policy does not say."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "cameras"):
        return {"cameras": list(config.cameras), "state_dim": config.state_dim, "action_dim": config.action_dim}
    meta = getattr(model, "metadata", None) or {}
    if {"cameras", "state_dim", "action_dim"} <= set(meta):
        return {key: meta[key] for key in ("cameras", "state_dim", "action_dim")}
    return None


def check_policy_fits(config: RobotConfig, bridge, shape: dict | None) -> None:
    """Refuse at start-up a policy whose inputs or outputs do not match the robot config and action
    space: otherwise every inference fails at run time and the arm just holds."""
    if shape is None:
        return
    missing = sorted(set(shape["cameras"]) - set(config.cameras))
    if missing:
        raise RobotConfigError(f"the policy needs cameras {missing} that the robot config does not list "
                               f"(it has {sorted(config.cameras)})")
    if shape["state_dim"] != bridge.state_dim:
        raise RobotConfigError(f"the policy takes a state of {shape['state_dim']} values, the "
                               f"{type(bridge).__name__} gives {bridge.state_dim}: wrong --action_space?")
    if config.gripper is not None and shape["action_dim"] <= bridge.gripper_index:
        raise RobotConfigError(f"the robot config has a gripper but the policy's {shape['action_dim']} actions "
                               f"have no gripper column {bridge.gripper_index}: remove `gripper` from the config")


def serve_ros(policy: str, robot: str, action_space: str = "end_effector_delta", policy_rate_hz: float = 20.0,
              device: str = "cpu", domain_id: int | None = None, enable_on_start: bool = False,
              realtime_priority: int = 0, inference_process: bool = False, use_sim_time: bool = False,
              stop: threading.Event | None = None) -> None:
    """Run the policy node until Ctrl-C/SIGTERM (or `stop` is set). Motion waits for ~/enable_motion
    unless enable_on_start (for simulation only).

    realtime_priority > 0 puts the control and callback threads, and Fast DDS's own receive and
    send threads, at SCHED_FIFO and lowers this process's GIL switch interval to 0.5 ms, so that
    a real-time thread waiting for the GIL gets it within that time from a busy Python thread,
    not Python's default 5 ms (benchmarks/ros_loop.py).

    inference_process runs a local checkpoint in a child process (real_robot/inference_process.py),
    so inference's Python work never holds the control loop's GIL."""
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    config = load_robot_config(robot)  # config errors surface before anything heavy loads
    _log_to_stderr()
    prepare_ros_environment(domain_id)
    rclpy = import_rclpy()
    bridge, kinematics = make_bridge(config, action_space, policy_rate_hz)
    from vla.real_robot.ros_node import PolicyNodeOptions

    remote = policy.startswith(("ws://", "wss://"))
    child = None
    try:
        if inference_process and not remote:
            from vla.real_robot.inference_process import LocalPolicyProcess

            child = LocalPolicyProcess(policy, device)
            model, remote = child.client, True
        else:
            model = load_policy(policy, device)
        check_policy_fits(config, bridge, policy_shape(model))
        arguments = {"policy": policy, "robot": str(robot), "action_space": action_space, "device": device,
                     "enable_on_start": enable_on_start, "inference_process": inference_process}
        options = PolicyNodeOptions(realtime_priority=realtime_priority, use_sim_time=use_sim_time,
                                    serve_ros_arguments=arguments)
        _run_node(rclpy, config, model, remote, kinematics, bridge, options, enable_on_start, stop)
    finally:
        if child is not None:  # whatever failed above, the inference process does not outlive the node
            child.close()


def _run_node(rclpy, config: RobotConfig, model, remote: bool, kinematics, bridge, options,
              enable_on_start: bool, stop: threading.Event | None) -> None:
    from vla.real_robot.ros_node import PolicyNode

    realtime_priority = options.realtime_priority
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        safety = build_safety_layer(config, kinematics)
        batch_builder = None
        if remote:
            from vla.real_robot.policy_client import numpy_batch

            batch_builder = numpy_batch  # the server makes tensors; the robot needs no torch
        if realtime_priority > 0:
            sys.setswitchinterval(REALTIME_SWITCH_INTERVAL_S)
        node = PolicyNode(config, model, bridge, options=options, safety=safety, batch_builder=batch_builder,
                          context=context)
        if realtime_priority > 0:  # Fast DDS's threads exist once the node does
            from vla.real_robot.node_threads import set_dds_threads_realtime

            set_dds_threads_realtime(realtime_priority, node.rlog)
        node.start()
        if enable_on_start:
            _warn_enable_on_start(node.get_name())
            node.safety.enable()
        _wait_for_shutdown(stop)
    finally:
        try:
            if node is not None:
                node.close()
        finally:
            rclpy.shutdown(context=context)


def run_sim_arm(robot: str, task: str = "lift", state_rate_hz: float = 100.0, image_rate_hz: float = 10.0,
                domain_id: int | None = None, stop: threading.Event | None = None) -> None:
    """Run the MuJoCo simulated arm node until Ctrl-C/SIGTERM (or `stop` is set)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    config = load_robot_config(robot)
    _log_to_stderr()
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


def _warn_enable_on_start(node_name: str) -> None:
    """--enable_on_start skips the operator's enable step: say so loudly, every start."""
    log = logging.getLogger("vla.real_robot")
    banner = "!" * 78
    log.warning(banner)
    log.warning("--enable_on_start: motion is ENABLED WITHOUT AN OPERATOR. The arm moves as soon as "
                "observations are fresh.")
    log.warning("Meant for simulation only. On a real arm, start without it and call "
                f"/{node_name}/enable_motion.")
    log.warning(f"Stop: /{node_name}/emergency_stop (latches) or /{node_name}/disable_motion.")
    log.warning(banner)


def _log_to_stderr() -> None:
    """The node's interventions and rejections are its operator's view: show INFO and up."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _wait_for_shutdown(stop: threading.Event | None) -> None:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("vla.real_robot").info("running; Ctrl-C to stop")
    while not stop.wait(0.5):
        pass


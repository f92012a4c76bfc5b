"""The policy node: ROS 2 observations in, safe joint commands out at a steady control rate.

Threads, so the control loop never waits on inference or on DDS:
- the rclpy executor thread runs subscription callbacks (cheap: parse, validate, store the
  latest message), the status timer and the parameter services;
- the safety thread runs the operator's services (e-stop, disable, enable, resume) alone: they
  live on a second node, `<name>_safety`, with its own executor and wait set, under the main
  node's service names. So a slow or flooded sensor callback cannot delay an e-stop
  (tests/real_robot/test_ros_estop_isolation.py). A callback group of their own on a
  MultiThreadedExecutor would isolate them too, but rclpy's multi-threaded executor raised the
  control loop's p99 jitter from 2-12 ms to 23-49 ms on the loaded 2-core machine (docs/DECISIONS.md);
- the inference thread turns the latest complete observation into an action
  chunk, converts it to joint waypoints (ros_kinematics) and hands it to ChunkExecutor;
  its GIL-cycling steps (batch packing, each row's inverse kinematics) wait while a control
  tick is due (_yield_to_control), so the woken control thread finds the GIL free;
- the control thread wakes at absolute deadlines (config control_rate_hz), takes
  ChunkExecutor.next_action, passes it through SafetyLayer.filter and publishes
  the SafeCommand as a JointTrajectory or Float64MultiArray (config output_mode);
  with a gripper in the config, the chunk's gripper column goes through GripperCommander
  and out as a Float64MultiArray of finger positions, only on ticks that are not holds.
Thread start and stop are NodeThreads' (shared with the sim arm); realtime_priority puts
the control and callback threads at SCHED_FIFO (and the inference thread, when inference runs
in another process); without it the control thread asks for a short EEVDF time slice. start()
freezes the objects alive then out of the garbage collector's reach (gc.freeze).

Shared state: the sensor callbacks' latest messages sit under `_lock`; the safety layer and the
chunk buffer lock themselves. `_command_lock` spans a control tick's filter-and-publish, and the
e-stop and disable services take it too: a command the filter let through before an e-stop is
published before the e-stop's reply, never after it.

A malformed message (including one without a stamp or stamped in the future) is dropped with one
rate-limited log line per kind of fault.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from vla.real_robot.ros_env import import_rclpy

rclpy = import_rclpy()
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla.real_robot.chunk_executor import ChunkExecutor  # noqa: E402
from vla.real_robot.gripper import GripperCommander  # noqa: E402
from vla.real_robot.node_threads import NodeThreads, set_threads_realtime  # noqa: E402
from vla.real_robot.rate_limited_log import RateLimitedLog  # noqa: E402
from vla.real_robot.robot_config import RobotConfig  # noqa: E402
from vla.real_robot.ros_kinematics import resample_waypoints  # noqa: E402
from vla.real_robot.ros_messages import (MessageRejected, compressed_topic, forward_position_msg,  # noqa: E402
                                         image_from_compressed, image_from_msg, joint_positions_from_msg,
                                         joint_trajectory_msg, named_positions, stamp_to_seconds)
from vla.real_robot.safety import Intervention, SafeCommand, SafetyLayer  # noqa: E402

_log = logging.getLogger("vla.real_robot.ros_node")
# Latest-value topics: a late sample is worth less than the next one.
SENSOR_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# The instruction as a latched topic (topics.instruction_durability: transient_local): a transient-local
# publisher's last message reaches a node that starts after it. Such a subscription cannot match a volatile
# publisher (`ros2 topic pub`'s default), hence a config choice, not both at once: a second subscription
# would make every volatile publisher warn that its messages are not delivered.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


ROSOUT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)  # rcl's own /rosout profile


class RosoutHandler(logging.Handler):
    """Publishes the vla.real_robot log records (interventions, dropped messages, errors) on /rosout
    as the node's, so `ros2 topic echo /rosout` and rqt_console show them. Published directly, not
    through the node's rclpy logger, which would print every line to the console a second time
    beside the process's own stderr logging."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        from rcl_interfaces.msg import Log

        self.node, self.message = node, Log
        self.publisher = node.create_publisher(Log, "/rosout", ROSOUT_QOS)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            Log = self.message
            level = (Log.ERROR if record.levelno >= logging.ERROR else Log.WARN if record.levelno >= logging.WARNING
                     else Log.INFO if record.levelno >= logging.INFO else Log.DEBUG)
            self.publisher.publish(Log(stamp=self.node.get_clock().now().to_msg(), level=level,
                                       name=self.node.get_name(), msg=self.format(record), file=record.pathname,
                                       function=record.funcName, line=record.lineno))
        except Exception:  # a logging failure must never reach the control loop
            self.handleError(record)


def _rosout_loggers(safety: SafetyLayer) -> list[logging.Logger]:
    """The loggers the /rosout handler goes on: vla.real_robot, and the safety layer's own logger
    when its records would not get there (a layer built with a logger outside that tree, or one
    that does not propagate), so that every intervention reaches /rosout whoever built the layer."""
    package = logging.getLogger("vla.real_robot")
    logger = getattr(getattr(safety, "log", None), "logger", None)
    current = logger
    while current is not None:
        if current is package:
            return [package]
        if not current.propagate:
            break
        current = current.parent
    return [package] if logger is None else [package, logger]


FINGER_JOINTS = ["panda_finger_joint1", "panda_finger_joint2"]


@dataclass
class PolicyNodeOptions:
    node_name: str = "vla_policy"
    # Finger joints read into an end-effector policy's state when the JointState carries them
    # (the robot config's gripper.joint_names take precedence).
    finger_joint_names: tuple[str, ...] = tuple(FINGER_JOINTS)
    ensemble_decay: float = 0.01
    temporal_ensembling: bool = True
    # Least time between two inferences (0: back to back); keeps CPU for the control loop.
    min_inference_interval_s: float = 0.0
    stats_window: int = 10_000
    # "single_threaded" or "events" (rclpy's EventsExecutor: dispatch in C++, less time holding the GIL),
    # for the sensor callbacks; the operator's services always have a single-threaded one of their own.
    executor: str = "single_threaded"
    # SCHED_FIFO priority for the control thread, and one less for the callback thread (0: leave the
    # scheduler alone). Needs CAP_SYS_NICE; without it one warning and normal priority. Inference in
    # this process stays at normal priority: it computes for long stretches and must not starve the
    # machine. Inference out of process (a policy with runs_out_of_process, the PolicyClient) mostly
    # waits on a socket: its thread and the client's then run two below the control thread.
    realtime_priority: int = 0
    # Without realtime_priority: the control thread asks the kernel for this short a time slice (EEVDF,
    # Linux 6.12+; node_threads.set_fair_slice), so it preempts a normal task when it wakes rather than
    # wait out that task's slice. Normal priority and fair share kept; 0: the kernel's default.
    control_slice_us: float = 200.0
    # At start, collect once and move every object alive then (torch, rclpy, the model) out of the
    # garbage collector's reach (gc.freeze): a full collection otherwise walks them all, 100-200 ms
    # holding the GIL, and the control thread waits for it (docs/DECISIONS.md).
    freeze_gc: bool = True
    # Publish the node's status (JSON in std_msgs/String on ~/status) this often (0: never).
    status_rate_hz: float = 1.0
    # Simulation: the node's clock is /clock (ROS's use_sim_time), so stamps in simulated time are fresh
    # and limits apply per simulated second; until /clock arrives every input counts as from the future.
    use_sim_time: bool = False
    # The `vla serve-ros` flags the node was started with (policy, robot, action_space, ...), shown as
    # read-only serve_ros.* parameters; empty when something else built the node.
    serve_ros_arguments: dict[str, Any] = dataclasses.field(default_factory=dict)


def _flatten(tree: dict, prefix: str = ""):
    """(dotted name, ROS-typed value) for every scalar or homogeneous list leaf; None and empty lists skipped."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, str) for v in value):
                yield name, list(value)
            elif value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                yield name, [float(v) for v in value]
        elif isinstance(value, (bool, int, float, str)):
            yield name, value


class PolicyNode(Node):
    """See the module docstring. `bridge` is a JointActionBridge or EndEffectorDeltaBridge."""

    def __init__(self, config: RobotConfig, policy: Any, bridge: Any, options: PolicyNodeOptions | None = None,
                 safety: SafetyLayer | None = None, batch_builder: Callable[[dict, list[str]], dict] | None = None,
                 clock: Callable[[], float] = time.time, context=None) -> None:
        self.options = options or PolicyNodeOptions()
        overrides = [Parameter("use_sim_time", value=True)] if self.options.use_sim_time else []
        super().__init__(self.options.node_name, context=context, parameter_overrides=overrides)
        if self.options.use_sim_time:
            clock = self._sim_seconds
        self.config = config
        self.policy = policy
        self.bridge = bridge
        self.clock = clock
        self.rlog = RateLimitedLog(_log)
        self.safety = safety or SafetyLayer(config, log=self.rlog)
        # With a gripper, the chunk carries its action as one extra column, ensembled like the joints.
        self.gripper = GripperCommander(config.gripper, self.rlog) if config.gripper is not None else None
        self.finger_joint_names = (list(config.gripper.joint_names) if config.gripper is not None
                                   else list(self.options.finger_joint_names))
        self.executor_buffer = ChunkExecutor(config.control_rate_hz, config.num_joints + (self.gripper is not None),
                                             self.options.ensemble_decay, self.options.temporal_ensembling)
        if batch_builder is None:
            # Import torch now: a first import inside the inference thread would stall it for seconds.
            from vla.policy.observation import observations_to_batch  # noqa: F401

            batch_builder = _torch_batch
        self.batch_builder = batch_builder
        self.rejected: dict[str, int] = {}
        self.commands_published = 0
        self.chunks_submitted = 0
        self.inference_errors = 0
        window = self.options.stats_window
        self.tick_starts: deque[float] = deque(maxlen=window)  # perf_counter at each control wake-up
        self.tick_compute_s: deque[float] = deque(maxlen=window)  # wake-up to publish returned
        self.obs_transport_s: deque[float] = deque(maxlen=window)  # joint state stamp to callback
        self.inference_s: deque[float] = deque(maxlen=window)

        self._lock = threading.Lock()
        self._joints: tuple[np.ndarray, np.ndarray | None, float] | None = None
        self._images: dict[str, tuple[np.ndarray, float]] = {}
        self._instruction: str | None = None
        self._new_observation = threading.Event()
        # Held from a control tick's filter to its publish, and by the e-stop and disable services
        # around their state change (module docstring).
        self._command_lock = threading.Lock()
        # The control thread's next wake-up (perf_counter) and a count of finished ticks: the inference
        # thread's GIL-heavy steps wait while a tick is due (_yield_to_control).
        self._next_deadline = -float("inf")
        self._ticks_done = 0
        self._tick_finished = threading.Condition()
        self._closed = False
        rt = self.options.realtime_priority
        priorities = {"control": rt, "spin": max(rt - 1, 1), "safety": max(rt - 1, 1)} if rt > 0 else {}
        if rt > 0 and getattr(policy, "runs_out_of_process", False):
            # The inference thread then only packs, waits on a socket and converts the chunk: a few ms of
            # GIL work per chunk. At normal priority, a loaded machine preempts it while it holds the GIL
            # and the real-time control thread waits behind it (priority inversion; docs/DECISIONS.md).
            priorities["inference"] = max(rt - 2, 1)
        self.threads = NodeThreads(self, self.options.node_name, self.rlog, self.options.executor, priorities,
                                   {"control": self.options.control_slice_us})
        self._stop = self.threads.stop_event

        sensors = MutuallyExclusiveCallbackGroup()
        self.create_subscription(JointState, config.topics.joint_states, self._on_joint_state, SENSOR_QOS,
                                 callback_group=sensors)
        for cam, cam_cfg in config.cameras.items():
            msg_type = CompressedImage if cam_cfg.compressed else Image
            topic = compressed_topic(cam_cfg.topic) if cam_cfg.compressed else cam_cfg.topic
            self.create_subscription(msg_type, topic, lambda msg, cam=cam: self._on_image(cam, msg), SENSOR_QOS,
                                     callback_group=sensors)
        latched = config.topics.instruction_durability == "transient_local"
        self.create_subscription(String, config.topics.instruction, self._on_instruction,
                                 LATCHED_QOS if latched else COMMAND_QOS, callback_group=sensors)
        if config.output_mode == "joint_trajectory":
            self._publisher = self.create_publisher(JointTrajectory, config.topics.joint_trajectory, COMMAND_QOS)
        else:
            self._publisher = self.create_publisher(Float64MultiArray, config.topics.forward_position, COMMAND_QOS)
        self._gripper_publisher = (self.create_publisher(Float64MultiArray, config.gripper.topic, COMMAND_QOS)
                                   if config.gripper is not None else None)
        # The operator's services on a node and executor of their own (module docstring), named as
        # if they were this node's ("~/emergency_stop" -> /vla_policy/emergency_stop). One thread
        # runs them one at a time, so an enable cannot interleave with an e-stop.
        self.safety_node = Node(f"{self.options.node_name}_safety", context=context,
                                start_parameter_services=False)
        for name, callback in ((config.topics.emergency_stop, self._srv_emergency_stop),
                               (config.topics.resume, self._srv_resume), (config.topics.enable, self._srv_enable),
                               (config.topics.disable, self._srv_disable)):
            self.safety_node.create_service(Trigger, self.resolve_service_name(name), callback)
        self._safety_executor = SingleThreadedExecutor(context=context)
        self._safety_executor.add_node(self.safety_node)
        if self.options.status_rate_hz > 0:
            self._status_publisher = self.create_publisher(String, "~/status", COMMAND_QOS)
            self.create_timer(1.0 / self.options.status_rate_hz, self._publish_status)
        self._declare_config_parameters()
        # Last in __init__: nothing after it can fail and leave the handler on the shared logger.
        self._rosout = RosoutHandler(self)
        self._rosout_loggers = _rosout_loggers(self.safety)
        for logger in self._rosout_loggers:
            logger.addHandler(self._rosout)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "PolicyNode":
        """Spin callbacks, run inference and the control loop, each in its own daemon thread."""
        if self.options.freeze_gc:
            gc.collect()
            gc.freeze()
        self.threads.start({"inference": self._inference_loop, "control": self._control_loop,
                            "safety": self._safety_loop})
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the threads, then destroy both nodes; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._new_observation.set()  # wake the inference thread so it sees the stop
        self.threads.stop(timeout_s)  # joins the safety loop too
        self._safety_executor.shutdown(timeout_sec=timeout_s)
        self.safety_node.destroy_node()
        for logger in self._rosout_loggers:
            logger.removeHandler(self._rosout)
        self.destroy_node()

    def _safety_loop(self) -> None:
        # As NodeThreads._spin: spin_once with a timeout, so the loop sees the stop without a call.
        while not self._stop.is_set() and self.context.ok():
            try:
                self._safety_executor.spin_once(timeout_sec=0.25)  # a call wakes it at once
            except Exception as exc:  # a failing service call must not end e-stop handling
                if self._stop.is_set():
                    return
                self.rlog.log("safety_spin_error", f"safety executor: {type(exc).__name__}: {exc}", logging.ERROR)

    def _sim_seconds(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------ parameters
    def _declare_config_parameters(self) -> None:
        """The robot config, the node's options and its serve-ros flags as read-only ROS parameters
        (`ros2 param list/get/describe`), each described (real_robot/ros_parameters.py): what the node
        enforces and how it runs, visible where ROS tools look. The YAML stays the one source; limits
        are not changeable at run time on purpose (a safety layer whose limits move under it is not one)."""
        from rcl_interfaces.msg import ParameterDescriptor

        from vla.real_robot.ros_parameters import OPTION_DESCRIPTIONS, SERVE_ROS_DESCRIPTIONS, config_description

        def declare(name: str, value, description: str, how_to_change: str) -> None:
            self.declare_parameter(name, value, ParameterDescriptor(
                description=description, read_only=True, additional_constraints=f"read-only: {how_to_change}"))

        for name, value in _flatten(dataclasses.asdict(self.config)):
            declare(name, value, config_description(name) or f"robot config key {name} (not described yet)",
                    "edit the robot config YAML and restart the node")
        options = {key: getattr(self.options, key) for key in OPTION_DESCRIPTIONS if hasattr(self.options, key)}
        if hasattr(self.bridge, "policy_rate_hz"):
            options["policy_rate_hz"] = float(self.bridge.policy_rate_hz)
        for name, value in _flatten(options):
            declare(f"node.{name}", value, OPTION_DESCRIPTIONS[name], "restart the node with another value")
        arguments = {key: value for key, value in self.options.serve_ros_arguments.items()
                     if key in SERVE_ROS_DESCRIPTIONS}
        for name, value in _flatten(arguments):
            declare(f"serve_ros.{name}", value, SERVE_ROS_DESCRIPTIONS[name],
                    "restart `vla serve-ros` with another flag")

    # ------------------------------------------------------------ status
    def status(self, window: int = 500) -> dict:
        """What an operator's dashboard shows: motion permission and latch, interventions and dropped
        messages so far, which inputs are stale, and the last `window` ticks' timing."""
        now = self.clock()
        with self._lock:
            joints_age = None if self._joints is None else now - self._joints[2]
            image_ages = {cam: now - stamp for cam, (_, stamp) in self._images.items()}
            rejected = dict(self.rejected)
        limit = self.config.max_observation_age_s
        ages = {"joint_states": joints_age, **{cam: image_ages.get(cam) for cam in self.config.cameras}}
        ticks = np.diff(np.array(list(self.tick_starts)[-window:]))
        jitter = np.abs(ticks - 1.0 / self.config.control_rate_hz) * 1e3
        inference = np.array(list(self.inference_s)[-window:]) * 1e3

        def pct(values, q):
            return round(float(np.percentile(values, q)), 3) if len(values) else None

        return {
            "stamp": now, "motion_enabled": self.safety.enabled, "latched": self.safety.latch,
            "interventions": {k: n for k, n in self.safety.counts.items() if n},
            "rejected_messages": rejected,
            "stale_inputs": sorted(k for k, age in ages.items() if age is None or age > limit),
            "input_age_ms": {k: None if age is None else round(age * 1e3, 1) for k, age in ages.items()},
            "commands_published": self.commands_published, "chunks_submitted": self.chunks_submitted,
            "inference_errors": self.inference_errors,
            "control_jitter_ms": {"p50": pct(jitter, 50), "p99": pct(jitter, 99)},
            "inference_ms": {"p50": pct(inference, 50), "p99": pct(inference, 99)},
        }

    def _publish_status(self) -> None:
        self._status_publisher.publish(String(data=json.dumps(self.status())))

    # ------------------------------------------------------------ inputs
    def _reject(self, exc: MessageRejected) -> None:
        with self._lock:
            self.rejected[exc.kind] = self.rejected.get(exc.kind, 0) + 1
        self.rlog.log(exc.kind, f"dropped message: {exc}")

    def _message_time(self, header, source: str) -> float:
        """The message's stamp, checked: an unstamped message could be any age, and one stamped in
        the future would look fresh long after its sender stopped; both are refused."""
        stamp = stamp_to_seconds(header.stamp)
        if stamp <= 0:
            raise MessageRejected(f"unstamped_{source}", f"{source}: header.stamp is zero; the age of the data "
                                                         f"is unknown (stamp it at capture)")
        ahead = stamp - self.clock()
        if ahead > self.config.max_clock_skew_s:
            raise MessageRejected(f"stamp_future_{source}", f"{source}: stamped {ahead:.3f} s in the future, beyond "
                                                            f"max_clock_skew_s {self.config.max_clock_skew_s} "
                                                            f"(sync the clocks)")
        return stamp

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            q = joint_positions_from_msg(msg, self.config.joint_names)
            stamp = self._message_time(msg.header, "joint_states")
        except MessageRejected as exc:
            self._reject(exc)
            return
        now = self.clock()
        self.obs_transport_s.append(now - stamp)
        fingers = named_positions(msg, self.finger_joint_names)
        with self._lock:
            self._joints = (q, fingers, stamp)
            image_stamps = [s for _, s in self._images.values()]
            complete = len(self._images) == len(self.config.cameras)
        if complete:
            # The oldest input the policy needs decides staleness (SafetyLayer.observe's contract).
            if self.safety.observe(q, min([stamp, *image_stamps]), measured_at=stamp, now=now):
                self._new_observation.set()

    def _on_image(self, camera: str, msg) -> None:
        cam_cfg = self.config.cameras[camera]
        try:
            if isinstance(msg, CompressedImage):
                image = image_from_compressed(msg, camera, cam_cfg)
            else:
                image = image_from_msg(msg, camera, cam_cfg)
            stamp = self._message_time(msg.header, camera)
        except MessageRejected as exc:
            self._reject(exc)
            return
        with self._lock:
            self._images[camera] = (image, stamp)

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self._reject(MessageRejected("instruction_empty", "instruction is empty"))
            return
        with self._lock:
            previous = self._instruction
            self._instruction = text
        if text != previous:
            self.executor_buffer.clear()  # chunks for the old task must not play on
            self.rlog.log("instruction", f"instruction: {text!r}", logging.INFO)
            if previous is not None:
                # The arm brakes until a chunk for the new task arrives: a stream of distinct
                # instructions keeps it still. Safe, but the operator must see it.
                self.safety.record(Intervention.INSTRUCTION_CHANGE,
                                   f"new instruction {text!r}: buffered actions dropped, the arm brakes until "
                                   f"the policy answers")

    # ------------------------------------------------------------ services
    def _srv_emergency_stop(self, request, response):
        # Under the command lock: a tick that passed the filter before the latch publishes before
        # this reply; every later tick sees the latch and brakes.
        with self._command_lock:
            response.success, response.message = self.safety.emergency_stop("service call")
        self.executor_buffer.clear()
        return response

    def _srv_resume(self, request, response):
        self.executor_buffer.clear()  # plan afresh from where the arm stands now
        response.success, response.message = self.safety.resume()
        return response

    def _srv_enable(self, request, response):
        response.success, response.message = self.safety.enable()
        return response

    def _srv_disable(self, request, response):
        with self._command_lock:  # as the e-stop: nothing decided before it is sent after the reply
            response.success, response.message = self.safety.disable()
        self.executor_buffer.clear()  # after enable, plan afresh from where the arm stands
        return response

    # ------------------------------------------------------------ inference
    def _snapshot(self) -> tuple[dict, np.ndarray, float] | None:
        """The latest complete observation for the policy, its joints and its (joint) stamp."""
        with self._lock:
            if self._joints is None or self._instruction is None or len(self._images) < len(self.config.cameras):
                return None
            q, fingers, stamp = self._joints
            images = {cam: image for cam, (image, _) in self._images.items()}
            instruction = self._instruction
        state = self.bridge.policy_state(q, fingers)
        return {"images": images, "state": state, "task": instruction}, q, stamp

    def _inference_loop(self) -> None:
        priority = self.threads.priorities.get("inference", 0)
        if priority > 0 and hasattr(self.policy, "io_thread_ids"):
            set_threads_realtime(self.policy.io_thread_ids(), priority, self.rlog, "policy_client")
        last = 0.0
        while not self._stop.is_set():
            if not self._new_observation.wait(timeout=0.1):
                continue
            self._new_observation.clear()
            if self._stop.is_set():
                return
            # Before the checks below: an e-stop, disable or new instruction after this point
            # clears the buffer and so makes the chunk planned now be refused (ChunkExecutor).
            generation = self.executor_buffer.generation
            if not self.safety.enabled or self.safety.estopped:
                continue  # nothing may move: spare the CPU
            wait = self.options.min_inference_interval_s - (time.monotonic() - last)
            if wait > 0 and self._stop.wait(wait):
                return
            snapshot = self._snapshot()
            if snapshot is None:
                continue
            observation, q, stamp = snapshot
            last = time.monotonic()
            try:
                self._yield_to_control()
                batch = self.batch_builder(observation, list(self.config.cameras))
                start = time.perf_counter()
                chunk = self.policy.predict_action_chunk(batch)
                self.inference_s.append(time.perf_counter() - start)
                chunk = _to_numpy(chunk)
                if chunk.ndim == 3:
                    chunk = chunk[0]
                if not np.all(np.isfinite(chunk)):
                    raise ValueError("policy returned NaN/Inf actions")
                if self.executor_buffer.submit_chunk(self._control_chunk(chunk, q), stamp, generation):
                    self.chunks_submitted += 1
            except Exception as exc:  # a failed inference holds the arm (no chunk), never kills the node
                self.inference_errors += 1
                self.rlog.log("inference_error", f"inference failed: {type(exc).__name__}: {exc}", logging.ERROR)

    def _control_chunk(self, chunk: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Policy chunk [H, A] -> rows at the control rate: joint targets, then the gripper action if any."""
        joints = self.bridge.joint_chunk(chunk, q, pause=self._yield_to_control)
        if self.gripper is None:
            return joints
        column = self.bridge.gripper_index
        if chunk.shape[1] <= column:
            raise ValueError(f"the robot config has a gripper but the policy chunk has {chunk.shape[1]} columns, "
                             f"none for the gripper (column {column})")
        grip = chunk[:, column]
        # The same time grid as the joints; row 0 (the observation time) takes the first predicted value.
        grip = resample_waypoints(grip[:1], grip[:, None], self.bridge.policy_rate_hz, self.config.control_rate_hz)
        return np.concatenate([joints, grip[: joints.shape[0]]], axis=1)

    # ------------------------------------------------------------ control
    # The inference thread's steps (batch packing, each row's inverse kinematics) start only this long
    # before the control thread's next wake-up, else they wait for that tick to finish.
    YIELD_MARGIN_S = 0.003

    def _yield_to_control(self) -> None:
        """Wait while a control tick is due within YIELD_MARGIN_S (at most about one period).

        Why: every MuJoCo call (and socket call) releases the GIL and retakes it at once. CPython
        hands a released GIL to whichever thread takes it first, and a thread waiting for the GIL
        asks the holder to drop it only after a whole switch interval without any handover; so a
        thread that cycles the GIL, as inverse kinematics does, keeps the woken control thread
        waiting for the whole solve (2-5 ms measured, dozens of futile wake-ups) whatever its
        priority. Waiting here moves that work between ticks; the control thread never waits."""
        with self._tick_finished:
            seen = self._ticks_done
            remaining = self._next_deadline - time.perf_counter()
            if remaining < self.YIELD_MARGIN_S and remaining > -self.config.control_period_s:
                self._tick_finished.wait_for(lambda: self._ticks_done != seen or self._stop.is_set(),
                                             timeout=self.config.control_period_s)

    def _control_loop(self) -> None:
        period = self.config.control_period_s
        deadline = time.perf_counter()
        while not self._stop.is_set():
            deadline += period
            self._next_deadline = deadline
            delay = deadline - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                deadline = time.perf_counter()  # overran: restart the grid instead of bursting
            woke = time.perf_counter()
            self.tick_starts.append(woke)
            try:
                self.control_tick(self.clock())
            except Exception as exc:  # the loop must outlive any single tick
                self.rlog.log("control_error", f"control tick failed: {type(exc).__name__}: {exc}", logging.ERROR)
            self.tick_compute_s.append(time.perf_counter() - woke)
            with self._tick_finished:
                self._ticks_done += 1
                self._tick_finished.notify_all()

    def control_tick(self, now: float) -> SafeCommand:
        """One control step: next buffered action -> safety filter -> publish. Returns what was decided."""
        target = self.executor_buffer.next_action(now)
        grip = None
        if self.gripper is not None and target is not None:
            target, grip = target[:-1], float(target[-1])
        with self._command_lock:  # filter to publish in one piece against e-stop and disable
            command = self.safety.filter(target, now)
            if command.positions is not None:
                self._publish(command, now)
            if self.gripper is not None and command.positions is not None:
                fingers = self.gripper.update(grip, command.holding, now)
                if fingers is not None:
                    self._gripper_publisher.publish(forward_position_msg(fingers))
        return command

    def _publish(self, command: SafeCommand, now: float) -> None:
        if self.config.output_mode == "joint_trajectory":
            # Stamp zero (default): the controller starts the point on receipt, so no DDS delay can
            # make it "end in the past"; velocities only when the controller allows them at the end.
            msg = joint_trajectory_msg(self.config.joint_names, command.positions,
                                       command.velocities if self.config.trajectory_velocities else None,
                                       self.config.control_period_s,
                                       now if self.config.trajectory_stamp == "now" else None)
        else:
            msg = forward_position_msg(command.positions)
        self._publisher.publish(msg)
        self.commands_published += 1


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _torch_batch(observation: dict, cameras: list[str]) -> dict:
    from vla.policy.observation import observations_to_batch

    return observations_to_batch([observation], cameras)

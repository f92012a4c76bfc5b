"""A simulated arm that speaks the policy node's topics: MuJoCo physics on robosuite's Panda scene.

It publishes sensor_msgs/JointState (the config's joint names, plus the two
finger joints) at `state_rate_hz` and one sensor_msgs/Image (CompressedImage,
jpeg, for cameras marked compressed) per configured camera at `image_rate_hz`,
and follows position commands (JointTrajectory or Float64MultiArray, per the
config's output_mode) like an ideal position controller: the arm's joints are
driven kinematically to the commanded positions, at most joint_velocity_max per
step, while the rest of the scene (the cube) is simulated. The i-th config joint
is the model's robot0_joint{i+1}. With a gripper in the config, its
Float64MultiArray finger positions go to the model's finger position actuators
(robosuite's, kp 1000), so the fingers push on the cube like a real gripper; the
i-th gripper joint is the model's gripper0_finger_joint{i+1}.
A JointTrajectory that joint_trajectory_controller would refuse (real_robot/jtc_rules.py, with the
`controller` parameters, by default the controller's defaults) is dropped and counted in `rejected`
under `jtc_rejected`, as the real controller would drop it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from vla.real_robot.ros_env import import_rclpy  # noqa: E402

rclpy = import_rclpy()
import mujoco  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla.real_robot.jtc_rules import ControllerParams, jtc_violations  # noqa: E402
from vla.real_robot.node_threads import NodeThreads  # noqa: E402
from vla.real_robot.rate_limited_log import RateLimitedLog  # noqa: E402
from vla.real_robot.robot_config import RobotConfig  # noqa: E402
from vla.real_robot.ros_messages import (MessageRejected, command_from_msg, compressed_image_msg,  # noqa: E402
                                         compressed_topic, image_msg, joint_state_msg, stamp_to_seconds)
from vla.real_robot.ros_node import COMMAND_QOS, FINGER_JOINTS, SENSOR_QOS  # noqa: E402

_log = logging.getLogger("vla.real_robot.sim_arm")


class SimArmNode(Node):
    def __init__(self, config: RobotConfig, task: str = "lift", state_rate_hz: float = 100.0,
                 image_rate_hz: float = 10.0, node_name: str = "vla_sim_arm", context=None,
                 executor: str = "single_threaded", realtime_priority: int = 0,
                 controller: ControllerParams | None = None) -> None:
        super().__init__(node_name, context=context)
        if config.num_joints != 7:
            raise ValueError(f"the simulated Panda has 7 arm joints, robot config {config.name} names "
                             f"{config.num_joints}")
        sizes = {(c.height, c.width) for c in config.cameras.values()}
        if len(sizes) > 1:
            raise ValueError(f"the simulated cameras share one image size; the config asks for {sorted(sizes)}")
        if config.gripper is not None and len(config.gripper.joint_names) != 2:
            raise ValueError(f"the simulated Panda hand has 2 finger joints, the gripper config names "
                             f"{len(config.gripper.joint_names)}")
        self.config = config
        self.controller = controller if controller is not None else ControllerParams(tuple(config.joint_names))
        self.state_rate_hz = state_rate_hz
        self.image_rate_hz = image_rate_hz
        self.rlog = RateLimitedLog(_log)
        self.rejected: dict[str, int] = {}
        self.commands_received = 0
        self.gripper_commands_received = 0
        self.command_transport_s: deque[float] = deque(maxlen=10_000)  # command stamp to arrival

        self._env = _make_scene(task)
        self._model, self._data = self._env.sim.model._model, self._env.sim.data._data
        arm = [self._model.joint(f"robot0_joint{i}") for i in range(1, 8)]
        fingers = [self._model.joint(f"gripper0_finger_joint{i}") for i in (1, 2)]
        self._arm_qpos = np.array([j.qposadr[0] for j in arm])
        self._arm_dof = np.array([j.dofadr[0] for j in arm])
        self._finger_qpos = np.array([j.qposadr[0] for j in fingers])
        self._finger_dof = np.array([j.dofadr[0] for j in fingers])
        self._finger_actuators = np.array([self._model.actuator(f"gripper0_gripper_finger_joint{i}").id
                                           for i in (1, 2)])
        self._finger_ctrl_range = self._model.actuator_ctrlrange[self._finger_actuators].copy()
        # The fingers hold where robosuite's reset left them until the first gripper command.
        self._data.ctrl[self._finger_actuators] = self._data.qpos[self._finger_qpos]
        self._finger_names = list(config.gripper.joint_names) if config.gripper is not None else FINGER_JOINTS
        self._lock = threading.Lock()
        self._target = self._data.qpos[self._arm_qpos].copy()
        self._velocity_max = np.array(config.joint_velocity_max)
        # Like a ros2_control loop, physics and command reception may run at SCHED_FIFO (benchmarks).
        priorities = {"physics": realtime_priority, "spin": realtime_priority} if realtime_priority > 0 else {}
        self.threads = NodeThreads(self, "sim-arm", self.rlog, executor, priorities)
        self._stop = self.threads.stop_event

        self._state_pub = self.create_publisher(JointState, config.topics.joint_states, SENSOR_QOS)
        self._image_pubs = {
            cam: (self.create_publisher(CompressedImage, compressed_topic(cfg.topic), SENSOR_QOS) if cfg.compressed
                  else self.create_publisher(Image, cfg.topic, SENSOR_QOS))
            for cam, cfg in config.cameras.items()}
        if config.output_mode == "joint_trajectory":
            self.create_subscription(JointTrajectory, config.topics.joint_trajectory, self._on_command, COMMAND_QOS)
        else:
            self.create_subscription(Float64MultiArray, config.topics.forward_position, self._on_command,
                                     COMMAND_QOS)
        if config.gripper is not None:
            self.create_subscription(Float64MultiArray, config.gripper.topic, self._on_gripper, COMMAND_QOS)

    # ------------------------------------------------------------ state
    @property
    def joint_positions(self) -> np.ndarray:
        with self._lock:
            return self._data.qpos[self._arm_qpos].copy()

    def set_joint_positions(self, q) -> None:
        """Teleport the arm (test set-up); the target follows."""
        q = np.asarray(q, dtype=np.float64)
        with self._lock:
            self._data.qpos[self._arm_qpos] = q
            self._target = q.copy()
            mujoco.mj_forward(self._model, self._data)

    def _on_command(self, msg) -> None:
        try:
            q = command_from_msg(msg, self.config.joint_names)
        except MessageRejected as exc:
            self.rejected[exc.kind] = self.rejected.get(exc.kind, 0) + 1
            self.rlog.log(exc.kind, f"dropped command: {exc}")
            return
        if isinstance(msg, JointTrajectory):
            arrived = time.time()
            if msg.header.stamp.sec > 0:
                self.command_transport_s.append(arrived - stamp_to_seconds(msg.header.stamp))
            problems = jtc_violations(msg, self.controller, now=arrived)
            if problems:
                self.rejected["jtc_rejected"] = self.rejected.get("jtc_rejected", 0) + 1
                self.rlog.log("jtc_rejected", f"dropped trajectory, as joint_trajectory_controller would: "
                                              f"{'; '.join(problems)}")
                return
        with self._lock:
            self._target = q
        self.commands_received += 1

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        fingers = np.array(msg.data, dtype=np.float64)
        if fingers.shape != (2,) or not np.all(np.isfinite(fingers)):
            self.rejected["gripper_command"] = self.rejected.get("gripper_command", 0) + 1
            self.rlog.log("gripper_command", f"dropped gripper command {list(msg.data)}: need 2 finite positions")
            return
        lo, hi = self._finger_ctrl_range[:, 0], self._finger_ctrl_range[:, 1]
        with self._lock:
            self._data.ctrl[self._finger_actuators] = np.clip(fingers, lo, hi)
        self.gripper_commands_received += 1

    @property
    def finger_positions(self) -> np.ndarray:
        with self._lock:
            return self._data.qpos[self._finger_qpos].copy()

    # ------------------------------------------------------------ loops
    def start(self) -> "SimArmNode":
        self.threads.start({"physics": self._physics_loop, "camera": self._camera_loop})
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        self.threads.stop(timeout_s)
        self.destroy_node()
        self._env.close()

    def _physics_loop(self) -> None:
        period = 1.0 / self.state_rate_hz
        substeps = max(1, int(round(period / self._model.opt.timestep)))
        names = list(self.config.joint_names) + self._finger_names
        deadline = time.perf_counter()
        while not self._stop.is_set():
            with self._lock:
                q = self._data.qpos[self._arm_qpos].copy()
                step = np.clip(self._target - q, -self._velocity_max * period, self._velocity_max * period)
                velocity = step / period
                for k in range(1, substeps + 1):
                    # Ideal position control: the arm goes where it is told, the cube feels it.
                    self._data.qpos[self._arm_qpos] = q + step * k / substeps
                    self._data.qvel[self._arm_dof] = velocity
                    mujoco.mj_step(self._model, self._data)
                self._data.qpos[self._arm_qpos] = q + step
                mujoco.mj_forward(self._model, self._data)
                positions = np.concatenate([q + step, self._data.qpos[self._finger_qpos]])
                velocities = np.concatenate([velocity, self._data.qvel[self._finger_dof]])
            self._state_pub.publish(joint_state_msg(names, positions, velocities, time.time()))
            deadline += period
            delay = deadline - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
            else:
                deadline = time.perf_counter()

    def _camera_loop(self) -> None:
        if not self.config.cameras:
            return
        from vla.sim.render import CameraRenderer

        height, width = next((c.height, c.width) for c in self.config.cameras.values())
        # A GL context belongs to the thread that made it: build the renderer here.
        renderer = CameraRenderer(self._model, list(self.config.cameras), height, width)
        scratch = mujoco.MjData(self._model)
        period = 1.0 / self.image_rate_hz
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                with self._lock:
                    scratch.qpos[:] = self._data.qpos
                    stamp = time.time()
                mujoco.mj_kinematics(self._model, scratch)
                images = renderer.render(scratch)
                for cam, image in images.items():
                    if self.config.cameras[cam].compressed:
                        self._image_pubs[cam].publish(compressed_image_msg(image, stamp, cam))
                    else:
                        self._image_pubs[cam].publish(image_msg(image, stamp, cam))
                self._stop.wait(max(0.0, period - (time.perf_counter() - started)))
        finally:
            renderer.close()


def _make_scene(task: str):
    from vla.sim.robosuite_env import robosuite
    from vla.sim.tasks import get_task

    spec = get_task(task)
    env = robosuite.make(spec.env_name, robots=spec.robot, has_renderer=False, has_offscreen_renderer=False,
                         use_camera_obs=False, hard_reset=False, **dict(spec.env_kwargs))
    env.reset()
    return env

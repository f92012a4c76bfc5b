"""End to end, as a user runs it: `vla sim-arm` and `vla serve-ros --policy CHECKPOINT` as two
processes, talking over Fast DDS on loopback in a private domain; this test is the operator
(instruction, enable, e-stop) and records what crosses the wire.

The checkpoint is a tiny untrained FlowVLAPolicy whose normalisation stats pin its actions
near "move +x, close the gripper" (tiny_checkpoint.py), so the test can say what must happen.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

try:
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    rclpy = import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

from dds_loop import PANDA, RECORD_QOS, assert_within_limits, call, wait_for  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tiny_checkpoint import save_tiny_policy  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla.real_robot.ros_node import COMMAND_QOS, SENSOR_QOS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# [dx, dy, dz, rx, ry, rz, gripper]: +x at 20% of the OSC step, close the gripper.
ACTION_MEAN = [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


class Operator(Node):
    """Records the arm's joint states and the node's commands; calls the node's services."""

    def __init__(self, config, context) -> None:
        super().__init__("operator", context=context)
        self.config = config
        self._lock = threading.Lock()
        self.states: list[tuple[float, np.ndarray, np.ndarray]] = []  # (arrival, arm joints, fingers)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.gripper: list[np.ndarray] = []
        self.create_subscription(JointState, config.topics.joint_states, self._on_state, SENSOR_QOS)
        self.create_subscription(JointTrajectory, config.topics.joint_trajectory, self._on_command, RECORD_QOS)
        self.create_subscription(Float64MultiArray, config.gripper.topic, self._on_gripper, RECORD_QOS)
        self.instruction = self.create_publisher(String, config.topics.instruction, COMMAND_QOS)

    def _on_state(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        arm = np.array([msg.position[index[n]] for n in self.config.joint_names])
        fingers = np.array([msg.position[index[n]] for n in self.config.gripper.joint_names])
        with self._lock:
            self.states.append((time.monotonic(), arm, fingers))

    def _on_command(self, msg: JointTrajectory) -> None:
        with self._lock:
            self.commands.append((time.monotonic(), np.array(msg.points[0].positions)))

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        with self._lock:
            self.gripper.append(np.array(msg.data))

    def commands_since(self, t: float) -> list[np.ndarray]:
        with self._lock:
            return [q for stamp, q in self.commands if stamp >= t]

    def latest_state(self) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            return self.states[-1][1:] if self.states else None

    def states_since(self, t: float) -> list[np.ndarray]:
        with self._lock:
            return [q for stamp, q, _ in self.states if stamp >= t]


def start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vla.cli", *args], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def stop_all(procs: list[subprocess.Popen], timeout_s: float = 15.0) -> list[int]:
    """Ctrl-C to every process at once (they shut down in parallel); their exit codes."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout_s))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            codes.append(-9)
    return codes


# inference_process: the same checkpoint behind a loopback policy server in a child process of serve-ros
@pytest.mark.parametrize("inference_process", [False, True], ids=["inference_thread", "inference_process"])
def test_trained_policy_checkpoint_drives_the_sim_arm_safely(tmp_path, inference_process):
    raw = yaml.safe_load(PANDA.read_text())
    raw["max_observation_age_s"] = 0.4  # 10 Hz CPU-rendered images on a shared 2-core machine
    robot = tmp_path / "robot.yaml"
    robot.write_text(yaml.safe_dump(raw))
    from vla.real_robot.robot_config import load_robot_config

    config = load_robot_config(robot)
    domain_id = random.randint(100, 200)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONUNBUFFERED": "1"}
    arm_log, node_log = tmp_path / "sim_arm.log", tmp_path / "serve_ros.log"
    procs: list[subprocess.Popen] = []
    prepare_ros_environment(domain_id, localhost_only=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    operator = executor = spinner = None

    def logs() -> str:
        return "\n".join(f"--- {p.name}:\n{p.read_text()[-3000:]}" for p in (arm_log, node_log) if p.exists())

    try:
        procs.append(start(["sim-arm", f"--robot={robot}", f"--domain_id={domain_id}"], arm_log, env))
        checkpoint = save_tiny_policy(tmp_path / "policy", state_dim=8, action_mean=ACTION_MEAN)  # while it starts
        procs.append(start(["serve-ros", f"--policy={checkpoint}", f"--robot={robot}", f"--domain_id={domain_id}",
                            f"--inference_process={str(inference_process).lower()}"], node_log, env))
        operator = Operator(config, context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(operator)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        wait_for(lambda: operator.latest_state() is not None, 30.0, "joint states from the sim arm\n" + logs())
        enable = operator.create_client(Trigger, "/vla_policy/enable_motion")
        wait_for(lambda: enable.service_is_ready() or any(p.poll() is not None for p in procs), 40.0,
                 "the policy node's services")
        assert all(p.poll() is None for p in procs), logs()
        operator.destroy_client(enable)
        time.sleep(0.5)  # the node has observations by now: it would be commanding if it were going to
        assert operator.commands_since(0.0) == [], "a command was sent before the operator enabled motion"
        assert operator.gripper == [], "the gripper was commanded before the operator enabled motion"
        q_start, fingers_start = operator.latest_state()

        for _ in range(3):  # the first may go out before discovery completes
            operator.instruction.publish(String(data="lift the cube"))
            time.sleep(0.1)
        assert call(operator, "/vla_policy/enable_motion", 10.0).success
        wait_for(lambda: len(operator.commands_since(0.0)) > 75, 30.0, "1.5 s of commands\n" + logs())
        assert_within_limits(config, operator.commands_since(0.0))
        q_now, fingers_now = operator.latest_state()
        assert np.abs(q_now - q_start).max() > 0.02, "the sim arm did not follow the commands"
        # The policy closes the gripper: the command reached the sim arm's fingers.
        closed = np.array(config.gripper.closed_positions)
        assert operator.gripper and all(np.array_equal(g, closed) for g in operator.gripper)
        wait_for(lambda: operator.latest_state()[1][0] < fingers_start[0] - 0.01, 5.0, "the fingers closing")

        assert call(operator, "/vla_policy/emergency_stop", 10.0).success
        time.sleep(0.5)  # the hold brakes to rest within the acceleration limit, commands in flight land
        stopped_at = time.monotonic()
        time.sleep(0.6)
        after = operator.commands_since(stopped_at)
        assert all(np.array_equal(after[0], q) for q in after), "commands moved in e-stop"
        assert_within_limits(config, operator.commands_since(0.0))  # the e-stop braked, not jumped
        states = operator.states_since(stopped_at)
        assert len(states) > 10 and np.abs(np.stack(states) - states[0]).max() < 1e-6, "the arm moved in e-stop"
        assert all(p.poll() is None for p in procs), logs()
    finally:
        codes = stop_all(procs)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if operator is not None:
            operator.destroy_node()
        rclpy.shutdown(context=context)
        if spinner is not None:
            spinner.join(2.0)
    assert codes == [0] * len(procs), f"exit codes {codes}\n{logs()}"

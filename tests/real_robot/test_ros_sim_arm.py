"""End to end over DDS on loopback: the MuJoCo sim arm and the policy node with the
end-effector kinematics bridge. The policy is a scripted one (push +x); the arm must follow."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

try:
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    rclpy = import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

# Load torch/triton before the sim arm's EGL renderer: importing triton's LLVM after Mesa's
# llvmpipe is in the process segfaults (seen here). In deployment the two nodes are two processes.
import vla.policy.observation  # noqa: E402,F401
from dds_loop import wait_for  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from vla.real_robot.robot_config import load_robot_config  # noqa: E402
from vla.real_robot.ros_kinematics import EndEffectorDeltaBridge, panda_kinematics  # noqa: E402
from vla.real_robot.ros_node import COMMAND_QOS, PolicyNode  # noqa: E402
from vla.real_robot.safety import SafetyLayer  # noqa: E402
from vla.real_robot.sim_arm import SimArmNode  # noqa: E402

PANDA = Path(__file__).resolve().parents[2] / "configs" / "robot" / "panda.yaml"


class PushPolicy:
    """Every row: move the end effector +x at 30% of the OSC step, keep orientation."""

    def __init__(self) -> None:
        self.states: list[np.ndarray] = []

    def predict_action_chunk(self, batch):
        self.states.append(batch["observation.state"].numpy()[0])
        row = np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0], np.float32)
        return np.tile(row, (1, 10, 1))


def test_policy_drives_the_sim_arm_through_the_kinematics_bridge(tmp_path):
    prepare_ros_environment(localhost_only=True)
    raw = yaml.safe_load(PANDA.read_text())
    raw["max_observation_age_s"] = 0.4  # 10 Hz rendered images on a shared 2-core machine
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(raw))
    config = load_robot_config(tmp_path / "robot.yaml")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200))
    kinematics = panda_kinematics()
    policy = PushPolicy()
    arm = node = operator = None
    try:
        arm = SimArmNode(config, context=context).start()
        q_start = arm.joint_positions
        arm_fingers_start = arm.finger_positions
        assert arm_fingers_start[0] < 0.03  # robosuite's reset leaves the hand half open
        eef_start = kinematics.forward(q_start)[0]
        bridge = EndEffectorDeltaBridge(kinematics, policy_rate_hz=20.0, control_rate_hz=config.control_rate_hz)
        safety = SafetyLayer(config, forward_kinematics=kinematics.position_in_base)
        node = PolicyNode(config, policy, bridge, safety=safety, context=context).start()
        operator = Node("operator", context=context)
        instruction = operator.create_publisher(String, config.topics.instruction, COMMAND_QOS)
        enable = operator.create_client(Trigger, "/vla_policy/enable_motion")
        assert enable.wait_for_service(timeout_sec=5.0)
        wait_for(lambda: node.safety.counts["not_enabled"] > 0, 10.0, "complete observations at the node")
        for _ in range(3):
            instruction.publish(String(data="lift the cube"))
            time.sleep(0.05)
        future = enable.call_async(Trigger.Request())
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(operator)
        executor.spin_until_future_complete(future, timeout_sec=5.0)
        executor.shutdown(timeout_sec=1.0)
        assert future.done() and future.result().success

        wait_for(lambda: kinematics.forward(arm.joint_positions)[0][0] > eef_start[0] + 0.03, 10.0,
                 f"the sim arm's end effector to move 3 cm along +x: {node.safety.counts}, "
                 f"{node.commands_published} published, {node.chunks_submitted} chunks, {node.inference_errors} "
                 f"inference errors, {arm.commands_received} received, {node.rejected}, {len(policy.states)}")
        eef = kinematics.forward(arm.joint_positions)[0]
        assert abs(eef[1] - eef_start[1]) < 0.02 and abs(eef[2] - eef_start[2]) < 0.02, (eef, eef_start)
        # The policy saw the arm's state in vla.sim's layout: eef position first.
        assert np.allclose(policy.states[0][:3], eef_start, atol=1e-3)
        assert arm.commands_received >= 5 and not arm.rejected and node.inference_errors == 0
        assert node.safety.counts["workspace"] == 0
        # The policy's gripper action (-1: open) reached the sim arm's finger actuators.
        fingers_start = arm_fingers_start
        wait_for(lambda: arm.finger_positions[0] > 0.035, 5.0, f"the fingers opening from {fingers_start}")
        assert arm.gripper_commands_received >= 1 and node.gripper.changes == 1
    finally:
        for closable in (node, arm):
            if closable is not None:
                closable.close()
        if operator is not None:
            operator.destroy_node()
        rclpy.shutdown(context=context)


def test_sim_arm_drops_and_counts_a_trajectory_the_controller_would_refuse(tmp_path):
    """A stamped JointTrajectory whose (last) point has non-zero velocities is one a default
    joint_trajectory_controller refuses (allow_nonzero_velocity_at_trajectory_end: false): the sim
    arm drops it, counts it under jtc_rejected and does not move; the same point without velocities
    is accepted and followed."""
    from trajectory_msgs.msg import JointTrajectory

    from vla.real_robot.ros_messages import joint_trajectory_msg

    prepare_ros_environment(localhost_only=True)
    config = load_robot_config(PANDA)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200))
    arm = sender = None
    try:
        arm = SimArmNode(config, context=context).start()
        sender = Node("trajectory_sender", context=context)
        publisher = sender.create_publisher(JointTrajectory, config.topics.joint_trajectory, COMMAND_QOS)
        q0 = arm.joint_positions
        target = q0 + np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        velocities = np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])

        def send(with_velocities: bool) -> None:
            # Stamped now and due 0.5 s later: on time, so the velocities alone decide.
            publisher.publish(joint_trajectory_msg(config.joint_names, target,
                                                   velocities if with_velocities else None, 0.5, time.time()))

        def rejected() -> int:
            return arm.rejected.get("jtc_rejected", 0)

        def keep_sending_until(with_velocities: bool, done) -> bool:  # discovery may drop the first ones
            send(with_velocities)
            time.sleep(0.05)
            return done()

        wait_for(lambda: keep_sending_until(True, lambda: rejected() >= 1), 10.0,
                 f"a jtc_rejected count, rejected {arm.rejected}")
        time.sleep(0.3)  # any accepted command would have moved the arm by now
        assert arm.commands_received == 0, "a trajectory with non-zero end velocity was followed"
        assert set(arm.rejected) == {"jtc_rejected"}, arm.rejected
        np.testing.assert_allclose(arm.joint_positions, q0, atol=1e-9)
        assert len(arm.command_transport_s) >= 1  # stamped: its transport time was measured before the check
        n = rejected()
        wait_for(lambda: keep_sending_until(False, lambda: arm.commands_received >= 1), 10.0,
                 "the positions-only trajectory accepted")
        assert rejected() == n, "a positions-only trajectory was refused"
        wait_for(lambda: abs(arm.joint_positions[0] - target[0]) < 1e-3, 5.0, "the arm at the accepted target")
    finally:
        if arm is not None:
            arm.close()
        if sender is not None:
            sender.destroy_node()
        rclpy.shutdown(context=context)

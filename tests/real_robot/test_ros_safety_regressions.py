"""Issue 19's findings 1-4, each over real DDS: the driver plays an ideal position-controlled arm
(it goes to each command at once), so a command far from where the arm is shows up as a step
faster than the joint may move (Driver.max_step_speed)."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

try:
    from vla.real_robot.ros_env import import_rclpy

    import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

from dds_loop import (HOME, assert_continuous_from, assert_within_limits, call, enable_and_move,  # noqa: E402
                      running_loop, speed_limit, start_of_rest_bound, wait_at_rest, wait_for, wait_moving_fast)
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vla.real_robot.ros_messages import image_msg, joint_state_msg  # noqa: E402
from vla.real_robot.ros_node import SENSOR_QOS  # noqa: E402

FAR = np.array([-2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # 2.5 rad on joint 1: over a second at full speed


class TargetPolicy:
    """Every row: joint target HOME + offset, then "close the gripper"."""

    def __init__(self, offset=FAR, horizon: int = 8) -> None:
        self.row = np.append(HOME + offset, 1.0)
        self.horizon = horizon

    def predict_action_chunk(self, batch):
        return np.tile(self.row, (1, self.horizon, 1))


def latch(node) -> str | None:
    return getattr(node.safety, "latch", "(no latch attribute)")


def resume_when_accepted(driver, timeout_s: float = 6.0) -> None:
    """Resume is refused while joint states still jump; an operator would retry."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if call(driver, "/vla_policy/resume").success:
            return
        time.sleep(0.2)
    raise AssertionError("resume was never accepted")


def test_arm_restarted_elsewhere_is_not_pulled_back_and_restarts_from_where_it_is(tmp_path):
    """Finding 1: the arm's driver dies, the arm comes back 1.77 rad away. Nothing may pull it to
    the node's old command; after resume motion starts from the measured pose."""
    with running_loop(tmp_path, TargetPolicy()) as (driver, node):
        enable_and_move(driver, node)
        driver.publishing = False
        wait_for(lambda: node.safety.counts["stale_observation"] > 3, 5.0, "a stale-observation hold")
        time.sleep(0.6)  # the hold has braked to rest
        restarted = driver.q.copy()
        restarted[0] += 1.77
        driver.teleport(restarted)
        came_back = time.monotonic()
        driver.publishing = True
        time.sleep(0.8)
        assert driver.commands_since(came_back) == [], "a command went to the restarted arm"
        np.testing.assert_array_equal(driver.q, restarted)
        assert latch(node) in ("following_error", "observation_jump"), node.safety.counts
        assert not call(driver, "/vla_policy/enable_motion").success, "enable must not clear a latched fault"

        resume_when_accepted(driver)
        wait_for(lambda: len(driver.commands_since(came_back)) > 20, 5.0, "motion after resume")
        after = driver.commands_since(came_back)
        assert np.all(np.abs(after[0] - restarted) <= start_of_rest_bound(node)), after[0] - restarted
        assert_within_limits(node.config, after)
        assert np.all(driver.max_step_speed() <= speed_limit(node)), driver.max_step_speed()


def test_static_arm_latches_a_following_error(tmp_path):
    """Finding 1: an arm that does not follow (static) must not let the commands drift away."""
    with running_loop(tmp_path, TargetPolicy()) as (driver, node):
        driver.follow = False
        for _ in range(3):
            driver.instruction_pub.publish(String(data="lift the cube"))
            time.sleep(0.1)
        assert call(driver, "/vla_policy/enable_motion").success
        wait_for(lambda: driver.commands_since(0.0), 5.0, "a first command")
        time.sleep(1.5)
        commands = driver.commands_since(0.0)
        drift = np.abs(np.stack(commands) - HOME).max()
        # Tolerance 0.1 rad, plus what full speed covers in the lag window and one observation period.
        assert 0.05 < drift < 0.1 + 2.2 * (node.config.following_lag_s + 0.05), drift
        assert latch(node) == "following_error", node.safety.counts
        assert driver.commands_since(time.monotonic() - 1.0) == [], "commands continued after the latch"
        assert node.safety.counts["following_error"] > 0


def test_push_during_estop_then_resume_starts_from_the_measured_pose(tmp_path):
    """Finding 2: after resume the first command is continuous with the measured pose."""
    with running_loop(tmp_path, TargetPolicy()) as (driver, node):
        enable_and_move(driver, node)
        wait_moving_fast(driver, node)
        assert call(driver, "/vla_policy/emergency_stop").success
        time.sleep(0.6)
        pushed_at = time.monotonic()
        pushed = driver.q.copy()
        for _ in range(10):  # moved by hand while stopped: 0.3 rad at about 1 rad/s
            pushed[1] += 0.03
            driver.teleport(pushed)
            time.sleep(0.03)
        time.sleep(0.4)
        assert driver.commands_since(pushed_at) == [], "the held arm was pulled back"
        assert call(driver, "/vla_policy/resume").success
        wait_for(lambda: len(driver.commands_since(pushed_at)) > 10, 5.0, "motion after resume")
        after = driver.commands_since(pushed_at)
        assert np.all(np.abs(after[0] - pushed) <= start_of_rest_bound(node)), after[0] - pushed
        assert np.all(driver.max_step_speed() <= speed_limit(node)), driver.max_step_speed()


def test_spoofed_joint_states_latch_and_never_move_the_arm(tmp_path):
    """Finding 2: a second publisher on the joint-state topic claims the arm is 0.73 rad away."""
    with running_loop(tmp_path, TargetPolicy()) as (driver, node):
        enable_and_move(driver, node)
        spoof_pub = driver.create_publisher(JointState, node.config.topics.joint_states, SENSOR_QOS)
        spoofing = threading.Event()
        spoofing.set()
        spoofed = driver.q.copy()
        spoofed[0] += 0.73

        def spoof():
            while spoofing.is_set():
                spoof_pub.publish(joint_state_msg(node.config.joint_names, spoofed, None, time.time()))
                time.sleep(0.02)

        thread = threading.Thread(target=spoof, daemon=True)
        thread.start()
        try:
            wait_for(lambda: latch(node) == "observation_jump", 5.0,
                     f"a latch on jumping joint states, counts {node.safety.counts}")
            time.sleep(0.3)
            assert not call(driver, "/vla_policy/resume").success, "resume accepted while joint states jump"
        finally:
            spoofing.clear()
            thread.join(2.0)
        assert np.abs(driver.q[0] - spoofed[0]) > 0.5, "the arm went to the spoofed pose"
        resume_when_accepted(driver)
        resumed = time.monotonic()
        wait_for(lambda: len(driver.commands_since(resumed)) > 10, 5.0, "motion after resume")
        assert np.all(driver.max_step_speed() <= speed_limit(node)), driver.max_step_speed()


def test_estop_and_stale_holds_decelerate_within_the_acceleration_limit(tmp_path):
    """Finding 3: holds brake at most at the acceleration limit, then send nothing."""
    with running_loop(tmp_path, TargetPolicy()) as (driver, node):
        enable_and_move(driver, node)
        wait_moving_fast(driver, node)
        assert call(driver, "/vla_policy/emergency_stop").success
        time.sleep(0.6)
        assert_within_limits(node.config, driver.commands_since(0.0))
        quiet = time.monotonic()
        time.sleep(0.3)
        assert driver.commands_since(quiet) == [], "a hold at rest kept sending"

        assert call(driver, "/vla_policy/resume").success
        wait_moving_fast(driver, node)
        driver.publishing = False
        wait_for(lambda: node.safety.counts["stale_observation"] > 3, 5.0, "a stale-observation hold")
        time.sleep(0.6)
        commands = driver.commands_since(0.0)
        assert_within_limits(node.config, commands)
        assert np.abs(commands[-1] - commands[-2]).max() == 0.0, "the stale hold did not come to rest"
        assert np.all(driver.max_step_speed() <= speed_limit(node)), driver.max_step_speed()
        # Fresh observations again: motion restarts by itself from the measured pose.
        back = time.monotonic()
        driver.publishing = True
        wait_for(lambda: len(driver.commands_since(back)) > 10, 5.0, "motion after the sensors came back")
        assert_within_limits(node.config, driver.commands_since(0.0))


def test_future_and_unstamped_messages_are_refused_not_latched(tmp_path):
    """Finding 4: one joint state and one image stamped an hour ahead must not hold the arm for
    good; unstamped messages cannot prove they are fresh."""
    with running_loop(tmp_path, TargetPolicy()) as (driver, node):
        enable_and_move(driver, node)
        stale_before = node.safety.counts["stale_observation"]
        ahead = time.time() + 3600.0
        future_state = joint_state_msg(node.config.joint_names, driver.q, None, ahead)
        future_image = image_msg(driver.image, ahead)
        unstamped = joint_state_msg(node.config.joint_names, driver.q, None, 0.0)
        for publisher, msg in ((driver.state_pub, future_state), (driver.image_pub, future_image),
                               (driver.state_pub, unstamped)):
            for _ in range(5):
                publisher.publish(msg)
                time.sleep(0.01)
        expected = {"stamp_future_joint_states", "stamp_future_agentview", "unstamped_joint_states"}
        wait_for(lambda: expected <= set(node.rejected), 5.0, f"rejections {expected}, got {node.rejected}")
        time.sleep(0.3)
        n = len(driver.commands_since(0.0))
        wait_for(lambda: len(driver.commands_since(0.0)) > n + 20, 5.0, "commands after the bad stamps")
        assert node.safety.counts["stale_observation"] == stale_before, "bad stamps held the arm"
        assert latch(node) is None


def test_resume_needs_a_latch_and_disable_brakes_until_enable(tmp_path):
    """Finding 7: resume is no back door to enabling motion; ~/disable_motion withdraws it."""
    with running_loop(tmp_path, TargetPolicy()) as (driver, node):
        wait_for(lambda: node.safety.counts["not_enabled"] > 3, 8.0, "observations reaching the node")
        response = call(driver, "/vla_policy/resume")
        assert not response.success and "enable" in response.message
        time.sleep(0.2)
        assert driver.commands_since(0.0) == [], "resume enabled motion without a latch"
        enable_and_move(driver, node)
        wait_moving_fast(driver, node)
        assert call(driver, "/vla_policy/disable_motion").success
        time.sleep(0.5)  # brakes to rest
        quiet = time.monotonic()
        time.sleep(0.3)
        assert driver.commands_since(quiet) == [], "commands went on after disable"
        assert_within_limits(node.config, driver.commands_since(0.0))
        assert call(driver, "/vla_policy/enable_motion").success
        wait_for(lambda: len(driver.commands_since(quiet)) > 10, 5.0, "motion after enable")
        assert np.all(driver.max_step_speed() <= speed_limit(node)), driver.max_step_speed()


def test_enable_on_start_warns_loudly(caplog):
    from vla.real_robot.ros_serve import _warn_enable_on_start

    with caplog.at_level(logging.WARNING, logger="vla.real_robot"):
        _warn_enable_on_start("vla_policy")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "ENABLED WITHOUT AN OPERATOR" in text and "/vla_policy/disable_motion" in text


class GripperWavePolicy(TargetPolicy):
    """Joint targets as TargetPolicy; the gripper column a 5 Hz square wave of +-amplitude in wall time."""

    def __init__(self, amplitude: float) -> None:
        super().__init__(offset=np.zeros(7), horizon=16)
        self.amplitude = amplitude

    def predict_action_chunk(self, batch):
        chunk = super().predict_action_chunk(batch).copy()
        row_times = time.time() + (np.arange(self.horizon) + 1) / 20.0  # rows are 1/20 s apart
        chunk[0, :, -1] = self.amplitude * np.where(np.floor(row_times / 0.1) % 2 == 0, 1.0, -1.0)
        return chunk


@pytest.mark.parametrize("amplitude", [0.01, 1.0])
def test_gripper_does_not_chatter(tmp_path, amplitude):
    """Finding 5: a gripper signal hovering at the threshold (+-0.01) must not toggle the gripper,
    and a full-swing one toggles at most once per min_dwell_s."""
    from vla.real_robot.ros_node import PolicyNodeOptions

    options = PolicyNodeOptions(temporal_ensembling=False)  # the latest chunk's row, unsmoothed
    with running_loop(tmp_path, GripperWavePolicy(amplitude), options=options) as (driver, node):
        enable_and_move(driver, node)
        wait_for(lambda: node.gripper.changes >= 1, 3.0, "a first gripper command")
        first, started = node.gripper.changes, time.monotonic()
        time.sleep(2.0)
        elapsed = time.monotonic() - started
        changes = node.gripper.changes - first
        if amplitude < 0.2:  # the shipped hysteresis
            assert changes == 0, f"{changes} gripper changes from a +-{amplitude} signal"
        else:
            assert 1 <= changes <= elapsed / 0.5 + 1, changes  # the shipped min_dwell_s


def test_duplicate_names_padded_images_and_instruction_floods_are_caught(tmp_path):
    """Finding 8: a JointState naming a joint twice, an image whose step disagrees with its width,
    and the buffer clears that a stream of new instructions causes."""
    with running_loop(tmp_path, TargetPolicy(offset=np.zeros(7))) as (driver, node):
        enable_and_move(driver, node)
        names = list(node.config.joint_names)
        duplicate = joint_state_msg(names + [names[0]], np.append(driver.q, 2.0), None, time.time())
        padded = image_msg(driver.image, time.time())
        padded.step = 64 * 3 + 64  # a padded row...
        padded.data = bytes(padded.step * 64)  # ...and a buffer that fits it: read as black before
        for publisher, msg in ((driver.state_pub, duplicate), (driver.image_pub, padded)):
            for _ in range(5):
                publisher.publish(msg)
                time.sleep(0.01)
        for i in range(5):
            driver.instruction_pub.publish(String(data=f"lift the cube, take {i}"))
            time.sleep(0.05)
        expected = {"joint_state_duplicate_names", "image_step_agentview"}
        wait_for(lambda: expected <= set(node.rejected), 5.0, f"rejections {expected}, got {node.rejected}")
        wait_for(lambda: node.safety.counts.get("instruction_change", 0) >= 4, 5.0,
                 f"instruction changes counted as interventions, counts {node.safety.counts}")
        n = len(driver.commands_since(0.0))
        wait_for(lambda: len(driver.commands_since(0.0)) > n + 20, 5.0, "commands after the bad messages")


def test_joint_policy_gets_the_workspace_check_on_its_links(tmp_path):
    """Finding 6: a joint-space policy is checked against the box too, on the tool point and the
    config's links. Raising the elbow 0.5 rad keeps the tool under z = 0.75 m but lifts link 7 to
    0.86 m: with robot0_link7 in workspace.links the arm stops at the box."""
    from vla.real_robot.ros_kinematics import panda_kinematics
    from vla.real_robot.ros_serve import workspace_check
    from vla.real_robot.safety import SafetyLayer

    kinematics = panda_kinematics()
    workspace = {"min": [0.15, -0.5, 0.02], "max": [0.8, 0.5, 0.75], "links": ["robot0_link7"]}
    checks = {}

    def make_safety(config):
        checks["fk"] = workspace_check(config, kinematics)
        return SafetyLayer(config, forward_kinematics=checks["fk"])

    elbow_up = np.array([0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0])
    with running_loop(tmp_path, TargetPolicy(offset=elbow_up), make_safety=make_safety,
                      workspace=workspace) as (driver, node):
        fk = checks["fk"]
        assert fk(HOME).shape == (2, 3)
        np.testing.assert_allclose(fk(HOME)[0], kinematics.position_in_base(HOME), atol=1e-9)
        assert fk(HOME + elbow_up)[1][2] > 0.75 > fk(HOME + elbow_up)[0][2]  # the link leaves, the tool does not
        enable_and_move(driver, node, commands=5)  # the arm soon stops at the box, then sends nothing
        wait_for(lambda: node.safety.counts["workspace"] > 0, 5.0, f"a workspace hold, counts {node.safety.counts}")
        time.sleep(0.5)
        points = np.stack([fk(q) for q in driver.commands_since(0.0)])
        assert np.all(points <= np.array(workspace["max"]) + 1e-9), points[..., 2].max(axis=0)
        assert points[:, 1, 2].max() > 0.7, "the arm did not get near the box's top"
        assert_within_limits(node.config, driver.commands_since(0.0))


MOVED = np.array([0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # the arm moved by hand (or sagged) 0.05 rad on joint 1


def test_arm_moved_during_a_stale_hold_restarts_from_the_measured_pose(tmp_path):
    """Continuity: the arm moves 0.05 rad (within the following tolerance) while the joint states are
    stale; when they return, motion restarts by itself from where the arm is, not from the hold."""
    with running_loop(tmp_path, TargetPolicy()) as (driver, node):
        enable_and_move(driver, node)
        wait_moving_fast(driver, node)
        driver.publishing = False
        wait_for(lambda: node.safety.counts["stale_observation"] > 3, 5.0, "a stale-observation hold")
        wait_at_rest(driver)
        moved = driver.q + MOVED
        driver.teleport(moved)
        back = time.monotonic()
        driver.publishing = True
        wait_for(lambda: len(driver.commands_since(back)) > 10, 5.0, "motion after the sensors came back")
        assert latch(node) is None, node.safety.counts
        assert_continuous_from(driver, node, back, moved)


def test_arm_moved_during_a_workspace_hold_restarts_from_the_measured_pose(tmp_path):
    """Continuity: the policy pushes link 7 out of the box (a workspace hold), the arm is moved 0.05
    rad meanwhile; the hold sends nothing once at rest (the arm is not pulled back), and when the
    policy turns back into the box motion restarts from the measured pose."""
    from vla.real_robot.ros_kinematics import panda_kinematics
    from vla.real_robot.ros_serve import workspace_check
    from vla.real_robot.safety import SafetyLayer

    kinematics = panda_kinematics()
    workspace = {"min": [0.15, -0.5, 0.02], "max": [0.8, 0.5, 0.75], "links": ["robot0_link7"]}

    def make_safety(config):
        return SafetyLayer(config, forward_kinematics=workspace_check(config, kinematics))

    policy = TargetPolicy(offset=np.array([0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0]))  # elbow up: link 7 leaves
    with running_loop(tmp_path, policy, make_safety=make_safety, workspace=workspace) as (driver, node):
        enable_and_move(driver, node, commands=5)  # the arm soon stops at the box, then sends nothing
        wait_for(lambda: node.safety.counts["workspace"] > 0, 5.0, f"a workspace hold, counts {node.safety.counts}")
        wait_at_rest(driver)
        rested = time.monotonic()
        time.sleep(0.3)
        assert driver.commands_since(rested) == [], "a workspace hold at rest kept sending"
        moved = driver.q + MOVED
        driver.teleport(moved)
        pushed = time.monotonic()
        time.sleep(0.4)  # the policy still pushes out of the box
        assert driver.commands_since(pushed) == [], "the moved arm was commanded during the workspace hold"
        np.testing.assert_array_equal(driver.q, moved)
        policy.row[:7] = HOME  # back down, into the box
        wait_for(lambda: len(driver.commands_since(pushed)) > 10, 5.0, "motion after the policy turned back")
        assert latch(node) is None, node.safety.counts
        assert_continuous_from(driver, node, pushed, moved)

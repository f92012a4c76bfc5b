"""The e-stop is answered while the sensor callbacks are busy, over real DDS (issue 19, operations).

An adversarial client floods the joint-state and image topics, a sensor callback is made slow (it
sleeps SLOW_S after storing each joint state: an expensive decode or a blocked handler), and the
policy busies the GIL in pure Python. The e-stop is called at the moment the slow callback starts.
With one callback thread for everything (the design before) the service waited for the callback
to end: 2 s, two slow callbacks, measured. With the operator's services on their own node and
executor thread it answers in milliseconds. After the reply only the braking ramp is sent.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

try:
    from vla.real_robot.ros_env import import_rclpy

    import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

from dds_loop import HOME, assert_within_limits, call, enable_and_move, running_loop, wait_for  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from vla.real_robot.ros_messages import image_msg, joint_state_msg  # noqa: E402
from vla.real_robot.ros_node import SENSOR_QOS, PolicyNode  # noqa: E402
from vla.real_robot.safety import JUMP_QUIET_S  # noqa: E402

SLOW_S = 1.0  # each joint-state callback, once slowed
ESTOP_BOUND_S = 0.25  # the e-stop's round trip: a few ms when isolated, about SLOW_S when not


class BusyWavePolicy:
    """Joint 1's target swings between -2 and +2 rad every 1.5 s (so the arm is always on its way
    somewhere, however long the set-up took), in 3 s of rows (inference runs once per slowed joint
    state), after `busy_s` of pure-Python work that holds the GIL between switch intervals."""

    def __init__(self, busy_s: float = 0.1, horizon: int = 60, rate_hz: float = 20.0) -> None:
        self.busy_s, self.horizon, self.rate_hz = busy_s, horizon, rate_hz

    def predict_action_chunk(self, batch):
        end = time.perf_counter() + self.busy_s
        n = 0
        while time.perf_counter() < end:
            n += 1
        rows = np.tile(np.append(HOME, 1.0), (self.horizon, 1))
        row_times = time.time() + np.arange(self.horizon) / self.rate_hz
        rows[:, 0] = np.where(np.floor(row_times / 1.5) % 2 == 0, 2.0, -2.0)
        return rows[None]


class SlowSensors:
    """Wraps PolicyNode._on_joint_state: once `slow` is set, each call sleeps SLOW_S after the
    original ran (the observation is stored, so the arm keeps moving), and `entered` marks the start."""

    def __init__(self) -> None:
        self.slow, self.entered = threading.Event(), threading.Event()
        self.sleeps: list[tuple[float, float]] = []  # (start, end) of each slow section
        self.original = PolicyNode._on_joint_state

    def __call__(self, node, msg) -> None:
        self.original(node, msg)
        if self.slow.is_set():
            start = time.monotonic()
            self.entered.set()
            time.sleep(SLOW_S)
            self.sleeps.append((start, time.monotonic()))


class Flood:
    """A second node's worth of traffic on the sensor topics, as fast as it can publish: copies of
    the arm's last published joint state (pose and stamp) and image, so the flood itself moves
    nothing and holds nothing. Not the arm's live pose: this test arm takes each command at once, so
    under load a burst of queued commands moves it several steps within a millisecond, which a
    2 kHz sampler reports as a jump faster than the joints can move (the jump latch fired, 18 times)."""

    def __init__(self, driver, config) -> None:
        self.driver, self.config = driver, config
        self.states = driver.create_publisher(JointState, config.topics.joint_states, SENSOR_QOS)
        self.images = driver.create_publisher(Image, config.cameras["agentview"].topic, SENSOR_QOS)
        self.running = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Flood":
        self.running.set()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running.clear()
        self.thread.join(5.0)

    def _run(self) -> None:
        while self.running.is_set():
            with self.driver._lock:
                last = self.driver.last_state
            if last is None:
                time.sleep(0.001)
                continue
            q, now = last
            self.states.publish(joint_state_msg(self.config.joint_names, q, None, now))
            self.images.publish(image_msg(self.driver.image, now))
            self.sent += 1
            time.sleep(0.0005)


def speeds(commands: list[np.ndarray], dt: float) -> np.ndarray:
    return np.abs(np.diff(np.stack(commands), axis=0)) / dt


def test_estop_is_answered_while_a_sensor_callback_is_slow_and_the_topics_flood(tmp_path, monkeypatch):
    slow = SlowSensors()
    monkeypatch.setattr(PolicyNode, "_on_joint_state", lambda node, msg: slow(node, msg))
    # Observations arrive once per SLOW_S while slowed: a generous age keeps the arm moving, so
    # the e-stop has something to stop.
    with running_loop(tmp_path, BusyWavePolicy(), max_observation_age_s=3.0) as (driver, node):
        config, dt = node.config, node.config.control_period_s
        enable_and_move(driver, node)
        client = driver.create_client(Trigger, "/vla_policy/emergency_stop")
        assert client.wait_for_service(timeout_sec=5.0)  # discovery outside the timed call
        with Flood(driver, config) as flood:
            wait_for(lambda: flood.sent > 200, 5.0, "the flood under way")

            def fast() -> bool:
                c = driver.commands_since(time.monotonic() - 0.1)
                return len(c) > 1 and abs(c[-1][0] - c[-2][0]) / dt > 1.0

            # The test arm takes each command at once, so on a loaded machine a burst of queued commands
            # can read as a joint-state jump and latch observation_jump before the e-stop phase (seen in
            # 2 of ~8 full-suite runs). That is the jump check doing its job (tested on its own in
            # test_ros_safety_regressions), not what this test measures: once quiet, resume and retry.
            resumed_at = 0.0
            for attempt in range(3):
                try:
                    wait_for(fast, 5.0, f"joint 1 moving faster than 1 rad/s (latch {node.safety.latch}, "
                                        f"{node.safety.counts}, rejected {node.rejected})")
                    break
                except AssertionError:
                    if node.safety.latch != "observation_jump" or attempt == 2:
                        raise
                    time.sleep(JUMP_QUIET_S + 0.2)
                    resumed_at = time.monotonic()
                    assert call(driver, "/vla_policy/resume").success
            slow.slow.set()
            assert slow.entered.wait(2.0), "the slow sensor callback never ran"
            sent_at = time.monotonic()
            future = client.call_async(Trigger.Request())
            done_at: list[float] = []  # when the reply arrived, not when wait_for polled it
            future.add_done_callback(lambda _: done_at.append(time.monotonic()))
            wait_for(lambda: done_at, 10.0, "the e-stop's reply")
            replied_at = done_at[0]
            assert future.result().success
            latency = replied_at - sent_at
            moving_at_stop = speeds(driver.commands_since(sent_at - 0.2), dt).max(axis=0)
            time.sleep(0.8)  # the braking ramp (at most ~0.3 s with these limits) and then silence
            quiet_from = time.monotonic()
            time.sleep(0.5)
            slow.slow.clear()
            flood_sent = flood.sent
        driver.destroy_client(client)
        stuck_in_callback = any(start <= sent_at and replied_at <= end for start, end in slow.sleeps)
        latched = node.safety.latch

    print(f"e-stop round trip {latency * 1e3:.1f} ms behind a {SLOW_S} s sensor callback; flood {flood_sent} "
          f"joint state + image pairs; speed at the stop {moving_at_stop[0]:.2f} rad/s")
    assert flood_sent > 500, f"the flood sent only {flood_sent} message pairs"
    assert latency < ESTOP_BOUND_S, (f"the e-stop took {latency:.3f} s behind a {SLOW_S} s sensor callback: it "
                                     f"shares the sensors' callback thread")
    assert stuck_in_callback, "the reply did not come while the sensor callback was still busy"
    assert latched == "emergency_stop"
    assert moving_at_stop[0] > 0.5, f"the arm was not moving when stopped ({moving_at_stop})"
    # After the reply: only the braking ramp (speeds never grow), within the limits, then nothing.
    after = driver.commands_since(replied_at)
    before = driver.commands_since(0.0)[: len(driver.commands_since(0.0)) - len(after)]
    ramp = before[-1:] + after  # from the last command sent before the reply
    if len(ramp) > 2:
        v = speeds(ramp, dt)
        assert np.all(np.diff(v, axis=0) <= 1e-9), f"a command after the e-stop's reply sped up: {v}"
    # A jump latch stops sending at once, by design (the arm is not following it: a ramp would pull it), so a
    # stream before a resume ends mid-motion; the limits hold from the resume on, the e-stop's ramp included.
    assert_within_limits(config, driver.commands_since(resumed_at))
    assert driver.commands_since(quiet_from) == [], "commands went on after the braking ramp"

"""GripperCommander: the policy's gripper action -> binary finger commands, frozen during holds."""

import dataclasses
import logging

import numpy as np
import pytest

from vla.real_robot.gripper import GripperCommander
from vla.real_robot.rate_limited_log import RateLimitedLog
from vla.real_robot.robot_config import GripperConfig

CONFIG = GripperConfig(topic="/g", joint_names=["f1", "f2"], open_positions=[0.04, -0.04],
                       closed_positions=[0.0, 0.0], position_min=[0.0, -0.04], position_max=[0.04, 0.0],
                       close_threshold=0.0, hysteresis=0.0, min_dwell_s=0.0)


def make(**changes) -> GripperCommander:
    return GripperCommander(dataclasses.replace(CONFIG, **changes), RateLimitedLog(logging.getLogger("test")),
                            resend_interval_s=1.0)


def test_nothing_is_sent_before_the_first_move_and_holds_freeze_the_command():
    g = make()
    assert g.update(0.9, holding=True, now=0.0) is None  # start-up / not enabled: nothing at all
    assert g.update(None, holding=False, now=0.1) is None  # no chunk yet
    np.testing.assert_array_equal(g.update(0.9, holding=False, now=0.2), [0.0, 0.0])  # closes
    assert g.update(0.8, holding=False, now=0.3) is None  # unchanged: not re-sent every tick
    assert g.update(-1.0, holding=True, now=0.4) is None  # e-stop: must not open
    assert g.closed_state is True and g.held_changes == 2  # the start-up ask and this one
    np.testing.assert_array_equal(g.update(-1.0, holding=False, now=0.5), [0.04, -0.04])  # opens
    assert g.changes == 2


def test_non_finite_actions_keep_the_command_and_it_is_resent_now_and_then():
    g = make()
    g.update(1.0, holding=False, now=0.0)
    assert g.update(float("nan"), holding=False, now=0.5) is None
    assert g.non_finite == 1 and g.closed_state is True
    np.testing.assert_array_equal(g.update(float("nan"), holding=False, now=1.2), [0.0, 0.0])  # keep-alive
    assert g.update(0.0, holding=False, now=1.3) is not None  # exactly the threshold: open
    assert g.closed_state is False


def test_hysteresis_keeps_a_hovering_signal_from_toggling():
    g = make(hysteresis=0.2)
    assert g.update(0.01, holding=False, now=0.0) is not None and g.closed_state is True  # first: the side of 0
    for i in range(100):  # +-0.01 around the threshold, every tick
        g.update(0.01 if i % 2 else -0.01, holding=False, now=0.02 * (i + 1))
    assert g.changes == 1
    g.update(-0.19, holding=False, now=3.0)
    assert g.closed_state is True  # inside the band: kept
    g.update(-0.21, holding=False, now=3.02)
    assert g.closed_state is False and g.changes == 2
    g.update(0.19, holding=False, now=3.04)
    assert g.closed_state is False


def test_dwell_spaces_out_changes():
    g = make(min_dwell_s=0.5)
    for i in range(100):  # a full-swing square wave, 2 s
        g.update(1.0 if i % 4 < 2 else -1.0, holding=False, now=0.02 * i)
    assert 3 <= g.changes <= 1 + 2.0 / 0.5 and g.dwell_refused > 0


def test_open_and_closed_positions_must_lie_within_the_finger_limits():
    with pytest.raises(ValueError, match="outside the finger limits"):
        make(closed_positions=[0.0, 0.01])

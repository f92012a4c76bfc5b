"""GripperCommander: the policy's gripper action -> binary finger commands, frozen during holds."""

import logging

import numpy as np

from vla.real_robot.gripper import GripperCommander
from vla.real_robot.rate_limited_log import RateLimitedLog
from vla.real_robot.robot_config import GripperConfig

CONFIG = GripperConfig(topic="/g", joint_names=["f1", "f2"], open_positions=[0.04, -0.04],
                       closed_positions=[0.0, 0.0], close_threshold=0.0)


def make() -> GripperCommander:
    return GripperCommander(CONFIG, RateLimitedLog(logging.getLogger("test")), resend_interval_s=1.0)


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

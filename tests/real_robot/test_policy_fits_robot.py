"""serve-ros refuses at start-up a policy that cannot run on the configured robot."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from vla.real_robot.robot_config import RobotConfigError, load_robot_config
from vla.real_robot.ros_kinematics import JointActionBridge
from vla.real_robot.ros_serve import check_policy_fits, policy_shape

PANDA = load_robot_config(Path(__file__).resolve().parents[2] / "configs" / "robot" / "panda.yaml")
BRIDGE = JointActionBridge(7, policy_rate_hz=20.0, control_rate_hz=50.0)


def local(cameras=("agentview",), state_dim=7, action_dim=8):
    return SimpleNamespace(config=SimpleNamespace(cameras=list(cameras), state_dim=state_dim, action_dim=action_dim))


def test_a_fitting_policy_passes_local_or_remote():
    check_policy_fits(PANDA, BRIDGE, policy_shape(local()))
    remote = SimpleNamespace(metadata={"cameras": ["agentview"], "state_dim": 7, "action_dim": 8})
    check_policy_fits(PANDA, BRIDGE, policy_shape(remote))
    # A server that does not describe its policy cannot be checked here: the node's run-time checks remain.
    assert policy_shape(SimpleNamespace(metadata={})) is None
    check_policy_fits(PANDA, BRIDGE, None)


@pytest.mark.parametrize("shape, fragment", [
    (dict(cameras=("wrist",)), "cameras \\['wrist'\\]"),
    (dict(state_dim=8), "state of 8 values"),
    (dict(action_dim=7), "no gripper column 7"),
])
def test_mismatches_are_start_up_errors_that_say_what_differs(shape, fragment):
    with pytest.raises(RobotConfigError, match=fragment):
        check_policy_fits(PANDA, BRIDGE, policy_shape(local(**shape)))

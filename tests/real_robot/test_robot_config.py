"""Robot config: the shipped Panda file loads; unknown keys and bad values fail naming key and file."""

from pathlib import Path

import pytest
import yaml

from vla.real_robot.robot_config import RobotConfigError, load_robot_config

PANDA = Path(__file__).resolve().parents[2] / "configs" / "robot" / "panda.yaml"


def _write(tmp_path, data) -> Path:
    path = tmp_path / "arm.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _panda_dict() -> dict:
    return yaml.safe_load(PANDA.read_text())


def test_panda_config_loads_with_datasheet_limits():
    cfg = load_robot_config(PANDA)
    assert cfg.num_joints == 7
    assert cfg.joint_names[0] == "panda_joint1"
    assert cfg.joint_position_max[3] == pytest.approx(-0.0698)
    assert cfg.joint_velocity_max[-1] == pytest.approx(2.61)
    assert cfg.joint_acceleration_max[1] == pytest.approx(7.5)
    assert cfg.control_period_s == pytest.approx(0.02)
    assert cfg.output_mode == "joint_trajectory"
    # What a default joint_trajectory_controller accepts: start on receipt, positions only.
    assert cfg.trajectory_stamp == "zero" and cfg.trajectory_velocities is False
    assert cfg.cameras["agentview"].topic == "/cameras/agentview/image_raw"


def test_unknown_top_level_key_names_key_and_file(tmp_path):
    data = _panda_dict()
    data["joint_velocity_limit"] = [1.0] * 7  # a plausible misspelling
    path = _write(tmp_path, data)
    with pytest.raises(RobotConfigError) as err:
        load_robot_config(path)
    assert "joint_velocity_limit" in str(err.value) and str(path) in str(err.value)


def test_unknown_nested_key_names_key(tmp_path):
    data = _panda_dict()
    data["topics"]["joint_state"] = "/js"
    data["cameras"]["agentview"]["fps"] = 30
    path = _write(tmp_path, data)
    with pytest.raises(RobotConfigError, match="joint_state|fps"):
        load_robot_config(path)


@pytest.mark.parametrize("key, value, fragment", [
    ("joint_velocity_max", [1.0] * 6, "6 entries"),
    ("joint_acceleration_max", [1.0] * 6 + [0.0], "positive"),
    ("joint_position_min", [3.0] * 7, "not below"),
    ("output_mode", "effort", "output_mode"),
    ("trajectory_stamp", "header", "trajectory_stamp"),
    ("control_rate_hz", 0.0, "control_rate_hz"),
    ("max_observation_age_s", -1.0, "max_observation_age_s"),
    ("workspace", {"min": [0, 0, 0], "max": [1, 1]}, "3 entries"),
    ("topics", {"instruction_durability": "sticky"}, "topics.instruction_durability 'sticky' is not one of"),
])
def test_bad_values_are_refused(tmp_path, key, value, fragment):
    data = _panda_dict()
    data[key] = value
    with pytest.raises(RobotConfigError, match=fragment):
        load_robot_config(_write(tmp_path, data))


def test_missing_required_key_and_missing_file(tmp_path):
    data = _panda_dict()
    del data["joint_names"]
    with pytest.raises(RobotConfigError, match="joint_names"):
        load_robot_config(_write(tmp_path, data))
    with pytest.raises(RobotConfigError, match="does not exist"):
        load_robot_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(RobotConfigError, match="mapping"):
        load_robot_config(bad)


def test_gripper_section_is_optional_and_checked(tmp_path):
    cfg = load_robot_config(PANDA)
    assert cfg.gripper.topic == "/gripper_controller/commands"
    assert cfg.gripper.open_positions == [0.04, -0.04]
    data = _panda_dict()
    del data["gripper"]
    assert load_robot_config(_write(tmp_path, data)).gripper is None
    for change, fragment in [
        (lambda g: g.update(opening=0.08), "opening"),  # unknown key inside the section
        (lambda g: g.update(closed_positions=[0.0]), "closed_positions has 1 entries"),
        (lambda g: g.update(close_threshold=1.5), "close_threshold"),
        (lambda g: g.update(joint_names=["panda_joint7", "panda_finger_joint2"]), "also arm joint_names"),
        (lambda g: g.pop("position_min"), "position_min is missing"),
        (lambda g: g.update(open_positions=[0.05, -0.04]), "outside its limits"),
        (lambda g: g.update(hysteresis=1.0), "hysteresis"),
        (lambda g: g.update(min_dwell_s=-1.0), "min_dwell_s"),
    ]:
        data = _panda_dict()
        change(data["gripper"])
        with pytest.raises(RobotConfigError, match=fragment):
            load_robot_config(_write(tmp_path, data))


def test_workspace_kinematics_and_links_are_checked(tmp_path):
    cfg = load_robot_config(PANDA)
    assert cfg.workspace.kinematics == "panda" and "robot0_link7" in cfg.workspace.links
    for change, fragment in [
        (lambda d: d["workspace"].update(kinematics="ur5"), "workspace.kinematics"),
        (lambda d: d["workspace"].update(kinematics="none"), "needs a kinematics model"),
        (lambda d: d.update(joint_names=d["joint_names"][:6], joint_position_min=d["joint_position_min"][:6],
                            joint_position_max=d["joint_position_max"][:6],
                            joint_velocity_max=d["joint_velocity_max"][:6],
                            joint_acceleration_max=d["joint_acceleration_max"][:6]), "7 joints"),
    ]:
        data = _panda_dict()
        change(data)
        with pytest.raises(RobotConfigError, match=fragment):
            load_robot_config(_write(tmp_path, data))

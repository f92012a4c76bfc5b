"""Typed robot description for the ROS 2 bridge, loaded strictly from YAML.

An unknown key anywhere in the file is an error at start-up that names the key
and the file: a misspelt limit must never silently fall back to a default.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import draccus
import yaml

from vla.errors import UserError

OUTPUT_MODES = ("joint_trajectory", "forward_position")
TRAJECTORY_STAMPS = ("zero", "now")


class RobotConfigError(UserError, ValueError):
    """A robot config file is missing, malformed, or names an unknown key."""


@dataclass
class CameraConfig:
    topic: str
    height: int
    width: int
    # True: sensor_msgs/CompressedImage (jpeg/png); False: raw sensor_msgs/Image.
    compressed: bool = False


WORKSPACE_KINEMATICS = ("panda", "none")


@dataclass
class WorkspaceBox:
    """Axis-aligned box (metres, robot base frame) the end effector must stay in."""

    min: list[float]
    max: list[float]
    # The model the box is checked with, for joint and end-effector policies alike: "panda" (the
    # MuJoCo Panda of vla.sim, 7 joints) or "none" (no workspace check at all; warned at start).
    kinematics: str = "panda"
    # Bodies of that model whose origins must stay in the box too, besides the tool point.
    links: list[str] = field(default_factory=list)


@dataclass
class GripperConfig:
    """A position-controlled gripper fed std_msgs/Float64MultiArray (e.g. a ros2_control
    forward_command_controller on the finger joints). See real_robot/gripper.py."""

    topic: str
    # Finger joints, in the order of the command's entries; also read from JointState for the policy's state.
    joint_names: list[str]
    open_positions: list[float]
    closed_positions: list[float]
    # Finger joint limits (same order and convention as joint_names); open/closed positions must
    # lie within them. Required whenever there is a gripper.
    position_min: list[float] | None = None
    position_max: list[float] | None = None
    # The policy's gripper action (robosuite: -1 open, +1 close) above close_threshold + hysteresis
    # closes the gripper, below close_threshold - hysteresis opens it; in between it keeps its state,
    # so a signal hovering at the threshold cannot make it chatter.
    close_threshold: float = 0.0
    hysteresis: float = 0.2
    # Least time between two gripper changes (s): a gripper needs about this long to open or close.
    min_dwell_s: float = 0.5


INSTRUCTION_DURABILITIES = ("volatile", "transient_local")


@dataclass
class TopicsConfig:
    joint_states: str = "/joint_states"
    instruction: str = "/instruction"
    # "volatile" (what `ros2 topic pub` offers by default) or "transient_local": a latched instruction, so a
    # node (re)started after the operator published still gets the last one; publishers must then offer
    # transient-local durability too (`ros2 topic pub --qos-durability transient_local ...`).
    instruction_durability: str = "volatile"
    joint_trajectory: str = "/joint_trajectory_controller/joint_trajectory"
    forward_position: str = "/forward_position_controller/commands"
    emergency_stop: str = "~/emergency_stop"
    resume: str = "~/resume"
    enable: str = "~/enable_motion"
    disable: str = "~/disable_motion"


@dataclass
class RobotConfig:
    name: str
    joint_names: list[str]
    joint_position_min: list[float]  # rad
    joint_position_max: list[float]  # rad
    joint_velocity_max: list[float]  # rad/s
    joint_acceleration_max: list[float]  # rad/s^2
    workspace: WorkspaceBox
    control_rate_hz: float = 50.0
    max_observation_age_s: float = 0.1
    # Measured joints further than this (rad, any joint) from every command of the last following_lag_s
    # latch a fault: the arm is not where the commands are (it restarted, was pushed, or a second
    # publisher speaks on the joint-state topic). following_lag_s is how long the controller may take
    # to reach a command.
    max_following_error_rad: float = 0.1
    following_lag_s: float = 0.06
    # A message stamped further than this in the future (s, against the node's clock) is refused:
    # accepted, it would look fresh long after its sender stopped.
    max_clock_skew_s: float = 0.05
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    output_mode: str = "joint_trajectory"
    # output_mode joint_trajectory only (see real_robot/jtc_rules.py and docs/ROS2.md).
    # trajectory_stamp: "zero" leaves header.stamp at 0, so joint_trajectory_controller starts each
    # trajectory on receipt and DDS latency cannot make it "end in the past"; "now" stamps it with
    # the node's clock (needs synced clocks, and a message later than one control period is refused).
    trajectory_stamp: str = "zero"
    # false: positions only (the controller interpolates linearly over the period, and accepts it with
    # its default allow_nonzero_velocity_at_trajectory_end: false); true: also the commanded
    # velocities, for a cubic spline, which needs allow_nonzero_velocity_at_trajectory_end: true.
    trajectory_velocities: bool = False
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    # None: the policy's gripper action is not sent anywhere (an arm without a gripper).
    gripper: GripperConfig | None = None

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        if n == 0:
            raise RobotConfigError("joint_names is empty")
        if len(set(self.joint_names)) != n:
            raise RobotConfigError(f"joint_names has duplicates: {self.joint_names}")
        for key in ("joint_position_min", "joint_position_max", "joint_velocity_max", "joint_acceleration_max"):
            values = getattr(self, key)
            if len(values) != n:
                raise RobotConfigError(f"{key} has {len(values)} entries but there are {n} joint_names")
            if not all(math.isfinite(v) for v in values):
                raise RobotConfigError(f"{key} has a non-finite entry: {values}")
        for i, (lo, hi) in enumerate(zip(self.joint_position_min, self.joint_position_max)):
            if not lo < hi:
                raise RobotConfigError(f"joint {self.joint_names[i]}: joint_position_min {lo} is not below max {hi}")
        for key in ("joint_velocity_max", "joint_acceleration_max"):
            if not all(v > 0 for v in getattr(self, key)):
                raise RobotConfigError(f"{key} must be positive: {getattr(self, key)}")
        box = self.workspace
        if len(box.min) != 3 or len(box.max) != 3:
            raise RobotConfigError("workspace.min and workspace.max need 3 entries (x, y, z)")
        if not all(lo < hi for lo, hi in zip(box.min, box.max)):
            raise RobotConfigError(f"workspace.min {box.min} must be below workspace.max {box.max} on every axis")
        if box.kinematics not in WORKSPACE_KINEMATICS:
            raise RobotConfigError(f"workspace.kinematics {box.kinematics!r} is not one of {WORKSPACE_KINEMATICS}")
        if box.kinematics == "panda" and n != 7:
            raise RobotConfigError(f"workspace.kinematics 'panda' needs the Panda's 7 joints, the config has {n}: "
                                   f"set workspace.kinematics: none (no workspace check)")
        if box.kinematics == "none" and box.links:
            raise RobotConfigError("workspace.links needs a kinematics model; workspace.kinematics is 'none'")
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0):
            raise RobotConfigError(f"control_rate_hz must be positive, got {self.control_rate_hz}")
        if not (math.isfinite(self.max_observation_age_s) and self.max_observation_age_s > 0):
            raise RobotConfigError(f"max_observation_age_s must be positive, got {self.max_observation_age_s}")
        for key in ("max_following_error_rad", "following_lag_s", "max_clock_skew_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise RobotConfigError(f"{key} must be positive, got {value}")
        if self.output_mode not in OUTPUT_MODES:
            raise RobotConfigError(f"output_mode {self.output_mode!r} is not one of {OUTPUT_MODES}")
        if self.trajectory_stamp not in TRAJECTORY_STAMPS:
            raise RobotConfigError(f"trajectory_stamp {self.trajectory_stamp!r} is not one of {TRAJECTORY_STAMPS}")
        if self.topics.instruction_durability not in INSTRUCTION_DURABILITIES:
            raise RobotConfigError(f"topics.instruction_durability {self.topics.instruction_durability!r} is not one "
                                   f"of {INSTRUCTION_DURABILITIES}")
        for cam_name, cam in self.cameras.items():
            if cam.height <= 0 or cam.width <= 0:
                raise RobotConfigError(f"camera {cam_name}: height and width must be positive")
        if self.gripper is not None:
            g = self.gripper
            if not g.joint_names:
                raise RobotConfigError("gripper.joint_names is empty")
            for key in ("open_positions", "closed_positions"):
                values = getattr(g, key)
                if len(values) != len(g.joint_names):
                    raise RobotConfigError(f"gripper.{key} has {len(values)} entries but there are "
                                           f"{len(g.joint_names)} gripper.joint_names")
                if not all(math.isfinite(v) for v in values):
                    raise RobotConfigError(f"gripper.{key} has a non-finite entry: {values}")
            if not -1.0 < g.close_threshold < 1.0:
                raise RobotConfigError(f"gripper.close_threshold must be inside (-1, 1), got {g.close_threshold}")
            if not (math.isfinite(g.hysteresis) and 0.0 <= g.hysteresis
                    and -1.0 < g.close_threshold - g.hysteresis and g.close_threshold + g.hysteresis < 1.0):
                raise RobotConfigError(f"gripper.hysteresis must be >= 0 and keep close_threshold +- hysteresis "
                                       f"inside (-1, 1), got {g.hysteresis}")
            if not (math.isfinite(g.min_dwell_s) and g.min_dwell_s >= 0.0):
                raise RobotConfigError(f"gripper.min_dwell_s must be >= 0, got {g.min_dwell_s}")
            _check_finger_limits(g)
            clash = set(g.joint_names) & set(self.joint_names)
            if clash:
                raise RobotConfigError(f"gripper.joint_names {sorted(clash)} are also arm joint_names")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz


def _check_finger_limits(g: GripperConfig) -> None:
    """Finger targets come from the config only, so checking them here checks every one sent."""
    n = len(g.joint_names)
    for key in ("position_min", "position_max"):
        values = getattr(g, key)
        if values is None:
            raise RobotConfigError(f"gripper.{key} is missing: the finger joint limits, to check the open and "
                                   f"closed positions against")
        if len(values) != n or not all(math.isfinite(v) for v in values):
            raise RobotConfigError(f"gripper.{key} needs {n} finite entries, got {values}")
    for key in ("open_positions", "closed_positions"):
        for name, x, lo, hi in zip(g.joint_names, getattr(g, key), g.position_min, g.position_max):
            if not lo <= x <= hi:
                raise RobotConfigError(f"gripper.{key}: {name} at {x} is outside its limits [{lo}, {hi}]")


def load_robot_config(path: str | os.PathLike) -> RobotConfig:
    """Read a robot config; every problem is raised as RobotConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RobotConfigError(f"robot config {path} does not exist")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise RobotConfigError(f"robot config {path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RobotConfigError(f"robot config {path}: the top level must be a mapping")
    try:
        # draccus.decode rejects unknown fields at every level and names them.
        return draccus.decode(RobotConfig, raw)
    except RobotConfigError as exc:
        raise RobotConfigError(f"robot config {path}: {exc}") from exc
    except Exception as exc:
        raise RobotConfigError(f"robot config {path}: {_innermost(exc)}") from exc


def _innermost(exc: BaseException) -> str:
    """draccus wraps __post_init__ errors; show the chain so the real reason is visible."""
    messages: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if str(cur) and str(cur) not in messages:
            messages.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    return " <- ".join(reversed(messages)) if messages else type(exc).__name__

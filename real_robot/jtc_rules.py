"""What ros2_control's joint_trajectory_controller (JTC, Jazzy/Kilted) accepts on its
`~/joint_trajectory` topic, written down once so that tests (and the node) can check each message.

ros2_control cannot be installed here, so these rules restate the controller's documented
behaviour rather than run it. Sources (ros-controls/ros2_controllers, joint_trajectory_controller):
- `JointTrajectoryController::validate_trajectory_msg` in src/joint_trajectory_controller.cpp,
  which both the topic callback and the action goal callback run; a message that fails it is
  dropped with one RCLCPP_ERROR line and the previous trajectory keeps running;
- src/joint_trajectory_controller_parameters.yaml for the parameters and their defaults
  (`allow_partial_joints_goal: false`, `allow_nonzero_velocity_at_trajectory_end: false` since
  Jazzy, `allow_integration_in_goal_trajectories: false`);
- doc/userdoc.rst: one-point trajectories are accepted; a point with positions only is
  interpolated linearly, with velocities as a cubic spline (src/trajectory.cpp,
  `interpolate_between_points`, uses velocities only when both ends have them).

The controller's checks, in its order, with its default parameters:
1. `joint_names` has exactly as many entries as the controller's `joints` (unless
   `allow_partial_joints_goal`), is not empty, and `points` is not empty;
2. `header.stamp` zero means "start on receipt"; any other stamp plus the last point's
   `time_from_start` must not lie before the controller's clock ("ends in the past");
3. every joint name is one of the controller's `joints`;
4. the last point's velocities are all within float epsilon of zero (or empty), unless
   `allow_nonzero_velocity_at_trajectory_end`;
5. `time_from_start` strictly increases from point to point;
6. each point has one position per joint name; velocities and accelerations are empty or one per
   joint name; effort is empty.

The controller does not check these, but a command must meet them anyway (stricter than JTC):
names unique (JTC keys its mapping by name; a duplicate would leave a joint unset), positions
finite and inside the robot config's limits, the first `time_from_start` positive (a zero one
asks for the jump to happen now), and, for a non-zero stamp, a due time not already past when the
message was built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FLOAT_EPSILON = float(np.finfo(np.float32).eps)  # std::numeric_limits<float>::epsilon() in the check


@dataclass(frozen=True)
class ControllerParams:
    """The JTC parameters that decide acceptance, with Jazzy/Kilted defaults."""

    joints: tuple[str, ...]
    allow_partial_joints_goal: bool = False
    allow_nonzero_velocity_at_trajectory_end: bool = False
    allow_integration_in_goal_trajectories: bool = False


def _seconds(t) -> float:
    return t.sec + t.nanosec * 1e-9


def jtc_violations(msg, params: ControllerParams, now: float | None = None,
                   position_min=None, position_max=None) -> list[str]:
    """Why the controller would reject `msg` (a trajectory_msgs/JointTrajectory), plus the stricter
    rules above; an empty list means accepted. `now`: the controller's clock when the message
    arrives (needed only for a non-zero stamp). `position_min/max`: limits in `msg.joint_names`
    order, or per name as dicts."""
    problems: list[str] = []
    names = list(msg.joint_names)
    points = list(msg.points)
    # 1. joint count, empty names, empty points
    if not params.allow_partial_joints_goal and len(names) != len(params.joints):
        problems.append(f"joint_names has {len(names)} entries, the controller {len(params.joints)} joints "
                        f"(allow_partial_joints_goal is false)")
    if not names:
        problems.append("empty joint_names")
    if not points:
        problems.append("empty trajectory (no points)")
        return problems
    # 2. a stamped message must not end in the past
    start = _seconds(msg.header.stamp)
    if start != 0.0:
        end = start + _seconds(points[-1].time_from_start)
        if now is None:
            problems.append("header.stamp is not zero: acceptance depends on arrival time, none given")
        elif end < now:
            problems.append(f"ends in the past: stamp {start:.6f} + time_from_start ends at {end:.6f}, "
                            f"before {now:.6f}")
    # 3. every name is a controller joint
    unknown = [n for n in names if n not in params.joints]
    if unknown:
        problems.append(f"joints {unknown} are not the controller's {list(params.joints)}")
    if len(set(names)) != len(names):
        problems.append(f"joint_names has duplicates: {names}")
    # 4. zero velocity at the end
    if not params.allow_nonzero_velocity_at_trajectory_end:
        moving = [v for v in points[-1].velocities if abs(v) > FLOAT_EPSILON]
        if moving:
            problems.append(f"last point has non-zero velocities {list(points[-1].velocities)} "
                            f"(allow_nonzero_velocity_at_trajectory_end is false)")
    # 5. and 6. timing and field sizes, per point
    previous = None
    for i, point in enumerate(points):
        t = _seconds(point.time_from_start)
        if previous is not None and t <= previous:
            problems.append(f"time_from_start not strictly increasing at point {i}: {previous} then {t}")
        if i == 0 and t <= 0.0:
            problems.append(f"point 0 has time_from_start {t}: must be positive")
        previous = t
        n = len(names)
        fields = {"positions": list(point.positions), "velocities": list(point.velocities),
                  "accelerations": list(point.accelerations)}
        if params.allow_integration_in_goal_trajectories:
            if not any(fields.values()):
                problems.append(f"point {i} has no positions, velocities or accelerations")
        elif len(fields["positions"]) != n:
            problems.append(f"point {i} has {len(fields['positions'])} positions for {n} joint names")
        for key in ("velocities", "accelerations") + (("positions",) if params.allow_integration_in_goal_trajectories
                                                      else ()):
            if fields[key] and len(fields[key]) != n:
                problems.append(f"point {i} has {len(fields[key])} {key} for {n} joint names")
        if len(point.effort):
            problems.append(f"point {i} has effort entries (not supported)")
        values = fields["positions"] + fields["velocities"] + fields["accelerations"]
        if not all(math.isfinite(x) for x in values):
            problems.append(f"point {i} has NaN/Inf entries")
        if position_min is not None and position_max is not None and len(fields["positions"]) == n:
            lo = [position_min[k] for k in names] if isinstance(position_min, dict) else list(position_min)
            hi = [position_max[k] for k in names] if isinstance(position_max, dict) else list(position_max)
            outside = [(name, x) for name, x, a, b in zip(names, fields["positions"], lo, hi) if not a <= x <= b]
            if outside:
                problems.append(f"point {i} positions outside the limits: {outside}")
    return problems

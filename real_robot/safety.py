"""The safety layer between any policy output and the arm's controller.

`SafetyLayer.filter(target, now)` is the only way to obtain a `SafeCommand`, and
publishers accept nothing else, so no policy output reaches the arm unchecked.

Rules, in order:
1. e-stop latched: hold the last commanded position until `resume()`;
2. start-up: nothing is commanded until a fresh observation arrived AND the
   operator called `enable()` (or `resume()` after an e-stop);
3. observation older than `max_observation_age_s`: hold the last commanded position;
4. a target with NaN/Inf or the wrong shape is rejected: the arm brakes to a
   stop within its acceleration limits;
5. the target is clamped to the joint position limits, then the step from the
   last commanded position is limited in velocity and acceleration at the
   control period, braking early enough never to cross a position limit;
6. a step that takes the end effector out of the workspace box (or further
   from it, when it starts outside) is rejected: hold the last commanded position.

Holds in rules 1, 3 and 6 stop at once (velocity to zero in one period): the
controller's own limits take over, as with any stop command. Every other
command respects the velocity and acceleration limits. Each intervention is
counted per kind and logged, rate-limited.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vla.real_robot.rate_limited_log import RateLimitedLog
from vla.real_robot.robot_config import RobotConfig


class Intervention(str, enum.Enum):
    EMERGENCY_STOP = "emergency_stop"
    NO_OBSERVATION = "no_observation"
    NOT_ENABLED = "not_enabled"
    STALE_OBSERVATION = "stale_observation"
    BAD_OBSERVATION = "bad_observation"
    NON_FINITE = "non_finite"
    BAD_SHAPE = "bad_shape"
    POSITION_LIMIT = "position_limit"
    VELOCITY_LIMIT = "velocity_limit"
    ACCELERATION_LIMIT = "acceleration_limit"
    WORKSPACE = "workspace"


@dataclass(frozen=True)
class SafetyLimits:
    position_min: np.ndarray
    position_max: np.ndarray
    velocity_max: np.ndarray
    acceleration_max: np.ndarray
    workspace_min: np.ndarray
    workspace_max: np.ndarray
    control_period_s: float
    max_observation_age_s: float

    @classmethod
    def from_robot_config(cls, config: RobotConfig) -> "SafetyLimits":
        def arr(values) -> np.ndarray:
            a = np.array(values, dtype=np.float64)
            a.setflags(write=False)
            return a

        return cls(arr(config.joint_position_min), arr(config.joint_position_max),
                   arr(config.joint_velocity_max), arr(config.joint_acceleration_max),
                   arr(config.workspace.min), arr(config.workspace.max),
                   config.control_period_s, config.max_observation_age_s)

    @property
    def num_joints(self) -> int:
        return int(self.position_min.shape[0])


# Only this module holds the token, so only SafetyLayer.filter can build a SafeCommand.
_ISSUED_BY_SAFETY_LAYER = object()


@dataclass(frozen=True)
class SafeCommand:
    """A command that passed the safety layer.

    positions is None when nothing may be sent at all (start-up): the
    controller keeps doing what it does with no command.
    """

    positions: np.ndarray | None
    velocities: np.ndarray | None
    holding: bool
    interventions: tuple[Intervention, ...]
    _token: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _ISSUED_BY_SAFETY_LAYER:
            raise TypeError("a SafeCommand is only made by SafetyLayer.filter")


ForwardKinematics = Callable[[np.ndarray], np.ndarray]


class SafetyLayer:
    """Stateful filter from raw joint targets to safe joint commands. Thread-safe."""

    def __init__(self, limits: SafetyLimits | RobotConfig, forward_kinematics: ForwardKinematics | None = None,
                 log: RateLimitedLog | None = None) -> None:
        self.limits = limits if isinstance(limits, SafetyLimits) else SafetyLimits.from_robot_config(limits)
        self.forward_kinematics = forward_kinematics
        self.log = log or RateLimitedLog(logging.getLogger("vla.real_robot.safety"))
        self._lock = threading.Lock()
        self._counts: dict[Intervention, int] = {kind: 0 for kind in Intervention}
        self._obs_positions: np.ndarray | None = None
        self._obs_stamp: float | None = None
        self._enabled = False
        self._estopped = False
        self._estop_reason = ""
        self._needs_anchor = True  # re-read the measured position before the next move
        self._last_positions: np.ndarray | None = None
        self._last_velocities: np.ndarray | None = None
        self.emergency_stops = 0

    # ------------------------------------------------------------ inputs
    def observe(self, joint_positions, stamp: float) -> bool:
        """Record the measured joint positions taken at `stamp` (same clock as filter's `now`).

        Pass the oldest stamp among the inputs the policy needs (joints, cameras)
        so that any stale input holds the arm. Returns False if rejected.
        """
        q = np.asarray(joint_positions, dtype=np.float64)
        with self._lock:
            if q.shape != (self.limits.num_joints,):
                self._intervene(Intervention.BAD_OBSERVATION,
                                f"observation has shape {q.shape}, expected ({self.limits.num_joints},)")
                return False
            if not np.all(np.isfinite(q)) or not np.isfinite(stamp):
                self._intervene(Intervention.BAD_OBSERVATION, "observation contains NaN/Inf")
                return False
            if self._obs_stamp is not None and stamp < self._obs_stamp:
                self._intervene(Intervention.BAD_OBSERVATION,
                                f"observation stamp {stamp} is older than the last one {self._obs_stamp}")
                return False
            self._obs_positions = q.copy()
            self._obs_stamp = float(stamp)
            return True

    def enable(self) -> tuple[bool, str]:
        """Operator allows motion; refused while the e-stop is latched."""
        with self._lock:
            if self._estopped:
                return False, "emergency stop is latched: call resume"
            if not self._enabled:
                self._enabled = True
                self._needs_anchor = True
            return True, "motion enabled"

    def emergency_stop(self, reason: str = "operator") -> tuple[bool, str]:
        """Latch the e-stop: hold until resume()."""
        with self._lock:
            self._estopped = True
            self._estop_reason = reason
            self._enabled = False
            self.emergency_stops += 1  # latch events; held ticks count under EMERGENCY_STOP
        self.log.log("emergency_stop_latched", f"emergency stop latched: {reason}", logging.ERROR)
        return True, f"emergency stop latched: {reason}"

    def resume(self) -> tuple[bool, str]:
        """Release the e-stop latch and enable motion (the operator's explicit act).

        Motion restarts from the measured position, at zero velocity, once a
        fresh observation is there.
        """
        with self._lock:
            was = self._estopped
            self._estopped = False
            self._enabled = True
            self._needs_anchor = True
        self.log.log("resume", "emergency stop released, motion enabled" if was else "motion enabled", logging.WARNING)
        return True, "resumed"

    # ------------------------------------------------------------ the filter
    def filter(self, target, now: float) -> SafeCommand:
        """The safe command for this control tick. `target` is joint positions [n], or None to stop smoothly."""
        with self._lock:
            return self._filter(target, now)

    def _filter(self, target, now: float) -> SafeCommand:
        lim = self.limits
        if self._estopped:
            return self._hold(Intervention.EMERGENCY_STOP, f"emergency stop latched ({self._estop_reason})")
        if self._obs_stamp is None:
            return self._hold(Intervention.NO_OBSERVATION, "no observation yet: nothing moves")
        if not self._enabled:
            return self._hold(Intervention.NOT_ENABLED, "motion not enabled by the operator")
        age = now - self._obs_stamp
        if not (-lim.max_observation_age_s <= age <= lim.max_observation_age_s):
            return self._hold(Intervention.STALE_OBSERVATION,
                              f"observation age {age:.3f} s beyond {lim.max_observation_age_s} s")
        if self._needs_anchor or self._last_positions is None:
            self._last_positions = self._obs_positions.copy()
            self._last_velocities = np.zeros(lim.num_joints)
            self._needs_anchor = False

        reasons: list[Intervention] = []
        q_prev, v_prev, dt = self._last_positions, self._last_velocities, lim.control_period_s
        desired_v = self._desired_velocity(target, q_prev, dt, reasons)
        v = self._limit_velocity(desired_v, q_prev, v_prev, reasons)
        q = q_prev + v * dt
        # Guard against rounding; never pull a position from outside the limits back in one jump.
        q = np.clip(q, np.minimum(lim.position_min, q_prev), np.maximum(lim.position_max, q_prev))
        if self.forward_kinematics is not None and not self._step_keeps_workspace(q_prev, q):
            return self._hold(Intervention.WORKSPACE, "step would leave the end-effector workspace box", reasons)
        self._last_positions = q
        self._last_velocities = (q - q_prev) / dt
        return self._issue(q, self._last_velocities, False, reasons)

    def _desired_velocity(self, target, q_prev: np.ndarray, dt: float, reasons: list[Intervention]) -> np.ndarray:
        lim = self.limits
        if target is None:
            return np.zeros(lim.num_joints)  # brake within the acceleration limits
        t = np.asarray(target, dtype=np.float64)
        if t.shape != (lim.num_joints,):
            self._note(reasons, Intervention.BAD_SHAPE, f"target has shape {t.shape}, expected ({lim.num_joints},)")
            return np.zeros(lim.num_joints)
        if not np.all(np.isfinite(t)):
            self._note(reasons, Intervention.NON_FINITE, "target contains NaN/Inf: braking")
            return np.zeros(lim.num_joints)
        clamped = np.clip(t, lim.position_min, lim.position_max)
        if np.any(clamped != t):
            self._note(reasons, Intervention.POSITION_LIMIT, "target clamped to the joint position limits")
        return (clamped - q_prev) / dt

    def _limit_velocity(self, desired: np.ndarray, q_prev: np.ndarray, v_prev: np.ndarray,
                        reasons: list[Intervention]) -> np.ndarray:
        """Clip each joint's velocity to the intersection of its velocity, acceleration and braking bounds.

        Braking bound: after moving at v for one period, the joint must still be
        able to stop before the limit at full deceleration:
        v*dt + v^2/(2a) <= distance to the limit, so v <= -a*dt + sqrt((a*dt)^2 + 2*a*d).
        If that held at the last step, full braking (v_prev - a*dt) satisfies it
        now (it gives v^2/(2a) - a*dt^2/2 <= v_prev^2/(2a) <= d), so the bounds
        always intersect.
        """
        lim = self.limits
        a, dt = lim.acceleration_max, lim.control_period_s
        d_hi = np.maximum(lim.position_max - q_prev, 0.0)
        d_lo = np.maximum(q_prev - lim.position_min, 0.0)
        brake_hi = -a * dt + np.sqrt((a * dt) ** 2 + 2.0 * a * d_hi)
        brake_lo = -a * dt + np.sqrt((a * dt) ** 2 + 2.0 * a * d_lo)
        his = np.stack([lim.velocity_max, v_prev + a * dt, brake_hi])
        los = np.stack([-lim.velocity_max, v_prev - a * dt, -brake_lo])
        hi, lo = his.min(axis=0), los.max(axis=0)
        # Rounding can cross the bounds by ~1e-15; then favour braking (the acceleration bound).
        lo = np.minimum(lo, hi)
        v = np.clip(desired, lo, hi)
        kinds = (Intervention.VELOCITY_LIMIT, Intervention.ACCELERATION_LIMIT, Intervention.POSITION_LIMIT)
        for j in np.nonzero(desired > hi)[0]:
            self._note(reasons, kinds[int(his[:, j].argmin())], "joint velocity limited")
        for j in np.nonzero(desired < lo)[0]:
            self._note(reasons, kinds[int(los[:, j].argmax())], "joint velocity limited")
        return v

    def _step_keeps_workspace(self, q_prev: np.ndarray, q: np.ndarray) -> bool:
        """Inside the box, or (when already outside) strictly closer to it."""
        def distance(joints: np.ndarray) -> float:
            try:
                p = np.asarray(self.forward_kinematics(joints), dtype=np.float64).reshape(-1)[:3]
            except Exception as exc:  # a kinematics failure must hold, not crash the loop
                self.log.log("forward_kinematics_error", f"forward kinematics failed: {exc}")
                return float("inf")
            if p.shape != (3,) or not np.all(np.isfinite(p)):
                return float("inf")
            excess = np.maximum(self.limits.workspace_min - p, 0.0) + np.maximum(p - self.limits.workspace_max, 0.0)
            return float(np.linalg.norm(excess))

        d_new = distance(q)
        if d_new == 0.0:
            return True
        return d_new < distance(q_prev)

    # ------------------------------------------------------------ bookkeeping
    def _hold(self, kind: Intervention, message: str, reasons: list[Intervention] | None = None) -> SafeCommand:
        reasons = list(reasons or [])
        self._note(reasons, kind, message)
        if self._last_positions is None:
            return self._issue(None, None, True, reasons)
        self._last_velocities = np.zeros(self.limits.num_joints)
        return self._issue(self._last_positions, self._last_velocities, True, reasons)

    def _note(self, reasons: list[Intervention], kind: Intervention, message: str) -> None:
        if kind not in reasons:
            reasons.append(kind)
            self._intervene(kind, message)

    def _intervene(self, kind: Intervention, message: str) -> None:
        self._counts[kind] += 1
        self.log.log(kind.value, message)

    @staticmethod
    def _issue(q, v, holding: bool, reasons: list[Intervention]) -> SafeCommand:
        def frozen(x):
            if x is None:
                return None
            x = np.array(x, dtype=np.float64)
            x.setflags(write=False)
            return x

        return SafeCommand(frozen(q), frozen(v), holding, tuple(reasons), _ISSUED_BY_SAFETY_LAYER)

    # ------------------------------------------------------------ status
    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {kind.value: n for kind, n in self._counts.items()}

    @property
    def estopped(self) -> bool:
        return self._estopped

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def last_commanded(self) -> np.ndarray | None:
        with self._lock:
            return None if self._last_positions is None else self._last_positions.copy()

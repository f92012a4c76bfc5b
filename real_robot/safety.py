"""The safety layer between any policy output and the arm's controller.

`SafetyLayer.filter(target, now)` is the only way to obtain a `SafeCommand`, and
publishers accept nothing else, so no policy output reaches the arm unchecked.

Rules, in order:
1. latched (operator e-stop, following error, implausible joint states): hold until `resume()`;
2. start-up: nothing is commanded until a fresh observation arrived AND the
   operator called `enable()` (or `resume()` after a latch); `disable()` holds again;
3. observation older than `max_observation_age_s`: hold;
4. the measured pose further than `max_following_error_rad` from the commands it should be
   following: latch (the arm restarted elsewhere, was pushed, or the joint states are spoofed);
5. a target with NaN/Inf or the wrong shape is rejected: the arm brakes to a
   stop within its acceleration limits;
6. the target is clamped to the joint position limits, then the step from the
   last commanded position is limited in velocity and acceleration at the
   control period, braking early enough never to cross a position limit;
7. a step whose end effector (or any checked link), or the braking path that would follow it,
   leaves the workspace box (or goes further out, when it starts outside) is rejected: hold.

A hold brakes within the acceleration limit (every accepted step's braking path was
checked, so braking stays inside the limits and the box), then sends nothing more: the
controller keeps the last point, and an arm that restarts meanwhile is not pulled back to
it. Exception: a following-error or implausible-joint-state latch sends nothing at once,
because ramping down commands the arm is not following would pull it toward them.
Motion restarts from the *measured* pose at rest (re-anchoring): after a hold came to rest
the measured pose must be within the following tolerance of the last command, otherwise
it latches; after enable/resume (an operator's act) it re-anchors unconditionally. The
re-anchor is committed only with a step that goes out: a first step from rest that the
workspace check refuses sends nothing (the hold point does not follow a pushed arm, and
the last command sent stays the following-error reference).
Each intervention is counted per kind and logged, rate-limited.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vla.real_robot.command_history import CommandHistory
from vla.real_robot.rate_limited_log import RateLimitedLog
from vla.real_robot.robot_config import RobotConfig

# Joint states that jumped faster than the joints can move must be quiet this long before
# resume() is accepted: a second publisher on the topic is still there otherwise.
JUMP_QUIET_S = 1.0


class Intervention(str, enum.Enum):
    EMERGENCY_STOP = "emergency_stop"
    NO_OBSERVATION = "no_observation"
    NOT_ENABLED = "not_enabled"
    STALE_OBSERVATION = "stale_observation"
    BAD_OBSERVATION = "bad_observation"
    FUTURE_STAMP = "future_stamp"
    OBSERVATION_JUMP = "observation_jump"
    FOLLOWING_ERROR = "following_error"
    NON_FINITE = "non_finite"
    BAD_SHAPE = "bad_shape"
    POSITION_LIMIT = "position_limit"
    VELOCITY_LIMIT = "velocity_limit"
    ACCELERATION_LIMIT = "acceleration_limit"
    WORKSPACE = "workspace"
    INSTRUCTION_CHANGE = "instruction_change"  # the node dropped its buffered chunks for a new task


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
    max_following_error_rad: float = 0.1
    following_lag_s: float = 0.06
    max_clock_skew_s: float = 0.05

    @classmethod
    def from_robot_config(cls, config: RobotConfig) -> "SafetyLimits":
        def arr(values) -> np.ndarray:
            a = np.array(values, dtype=np.float64)
            a.setflags(write=False)
            return a

        return cls(arr(config.joint_position_min), arr(config.joint_position_max),
                   arr(config.joint_velocity_max), arr(config.joint_acceleration_max),
                   arr(config.workspace.min), arr(config.workspace.max),
                   config.control_period_s, config.max_observation_age_s, config.max_following_error_rad,
                   config.following_lag_s, config.max_clock_skew_s)

    @property
    def num_joints(self) -> int:
        return int(self.position_min.shape[0])


# Only this module holds the token, so only SafetyLayer.filter can build a SafeCommand.
_ISSUED_BY_SAFETY_LAYER = object()


@dataclass(frozen=True)
class SafeCommand:
    """A command that passed the safety layer.

    positions is None when nothing may be sent (start-up, or a hold that has come to
    rest): the controller keeps doing what it does with no command.
    """

    positions: np.ndarray | None
    velocities: np.ndarray | None
    holding: bool
    interventions: tuple[Intervention, ...]
    _token: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _ISSUED_BY_SAFETY_LAYER:
            raise TypeError("a SafeCommand is only made by SafetyLayer.filter")


# Joint positions [n] -> points [3] or [k, 3] (tool point, links) in the workspace box's frame.
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
        self._obs_stamp: float | None = None  # oldest input: decides staleness
        self._obs_measured_at: float | None = None  # when the joints were measured: jump and following checks
        self._last_jump_at = -math.inf
        self._enabled = False
        self._latch: Intervention | None = None  # EMERGENCY_STOP, FOLLOWING_ERROR or OBSERVATION_JUMP
        self._latch_reason = ""
        self._anchor_requested = True  # operator act: restart from the measured pose
        self._resting = True  # nothing is being sent; the commanded state is at rest
        self._last_positions: np.ndarray | None = None
        self._last_velocities: np.ndarray | None = None
        lim = self.limits
        self._history = CommandHistory(lim.following_lag_s,
                                       lim.max_observation_age_s + lim.following_lag_s + lim.control_period_s)
        self.emergency_stops = 0

    # ------------------------------------------------------------ inputs
    def observe(self, joint_positions, stamp: float, measured_at: float | None = None,
                now: float | None = None) -> bool:
        """Record the measured joint positions (same clock as filter's `now`). Returns False if rejected.

        `stamp`: the oldest stamp among the inputs the policy needs (joints, cameras), so that
        any stale input holds the arm. `measured_at`: the joints' own stamp (default `stamp`),
        for the check that they did not jump faster than the joints can move. `now`: the
        receiving clock; with it, a stamp in the future beyond max_clock_skew_s is refused.
        """
        q = np.asarray(joint_positions, dtype=np.float64)
        measured_at = stamp if measured_at is None else measured_at
        lim = self.limits
        with self._lock:
            if q.shape != (lim.num_joints,):
                self._intervene(Intervention.BAD_OBSERVATION,
                                f"observation has shape {q.shape}, expected ({lim.num_joints},)")
                return False
            if not (np.all(np.isfinite(q)) and math.isfinite(stamp) and math.isfinite(measured_at)):
                self._intervene(Intervention.BAD_OBSERVATION, "observation contains NaN/Inf")
                return False
            if now is not None:
                if max(stamp, measured_at) > now + lim.max_clock_skew_s:
                    self._intervene(Intervention.FUTURE_STAMP,
                                    f"observation stamped {max(stamp, measured_at) - now:.3f} s in the future "
                                    f"(beyond max_clock_skew_s {lim.max_clock_skew_s}): refused")
                    return False
                if self._obs_stamp is not None and self._obs_stamp > now + lim.max_clock_skew_s:
                    self._forget_observation()  # our clock stepped back: the old stamps order nothing
            if self._obs_stamp is not None and (stamp < self._obs_stamp or measured_at < self._obs_measured_at):
                self._intervene(Intervention.BAD_OBSERVATION,
                                f"observation stamp {stamp} is older than the last one {self._obs_stamp}")
                return False
            if self._obs_positions is not None and self._jumped(q, measured_at):
                self._last_jump_at = measured_at
                self._set_latch(Intervention.OBSERVATION_JUMP,
                                "joint states jumped faster than the joints can move: a second publisher on the "
                                "topic, or a sensor fault")
                return False
            self._obs_positions = q.copy()
            self._obs_stamp = float(stamp)
            self._obs_measured_at = float(measured_at)
            return True

    def _jumped(self, q: np.ndarray, measured_at: float) -> bool:
        lim = self.limits
        allowed = lim.velocity_max * (measured_at - self._obs_measured_at) + lim.max_following_error_rad
        return bool(np.any(np.abs(q - self._obs_positions) > allowed))

    def _forget_observation(self) -> None:
        self._obs_positions = self._obs_stamp = self._obs_measured_at = None

    def enable(self) -> tuple[bool, str]:
        """Operator allows motion; refused while latched."""
        with self._lock:
            if self._latch is not None:
                return False, f"{self._latch.value} is latched ({self._latch_reason}): call resume"
            if not self._enabled:
                self._enabled = True
                self._anchor_requested = True
        self.log.log("enable", "motion enabled by the operator", logging.WARNING)
        return True, "motion enabled"

    def disable(self) -> tuple[bool, str]:
        """Operator withdraws the permission to move: brake to a stop and hold until enable()."""
        with self._lock:
            self._enabled = False
        self.log.log("disable", "motion disabled by the operator", logging.WARNING)
        return True, "motion disabled"

    def emergency_stop(self, reason: str = "operator") -> tuple[bool, str]:
        """Latch the e-stop: brake within the acceleration limits and hold until resume()."""
        with self._lock:
            self._set_latch(Intervention.EMERGENCY_STOP, reason)
            self.emergency_stops += 1  # latch events; held ticks count under EMERGENCY_STOP
        return True, f"emergency stop latched: {reason}"

    def resume(self) -> tuple[bool, str]:
        """Release a latch and enable motion (the operator's explicit act).

        Refused when nothing is latched (use enable) and while joint states still jump.
        Motion restarts from the next measured pose, at zero velocity.
        """
        with self._lock:
            if self._latch is None:
                return False, "nothing is latched: call enable_motion to allow motion"
            if self._obs_measured_at is not None and self._obs_measured_at - self._last_jump_at < JUMP_QUIET_S:
                return False, (f"joint states jumped less than {JUMP_QUIET_S} s ago: is a second node publishing "
                               f"them? resume once they are consistent")
            was = self._latch
            self._latch = None
            self._enabled = True
            self._anchor_requested = True
            # Start over from the next observation: this also drops a reference stamp that a clock
            # step (or anything else) left in the future.
            self._forget_observation()
        self.log.log("resume", f"{was.value} released, motion enabled", logging.WARNING)
        return True, "resumed"

    def record(self, kind: Intervention, message: str) -> None:
        """Count and log an intervention made outside the filter (by the node)."""
        with self._lock:
            self._intervene(kind, message)

    def _set_latch(self, kind: Intervention, reason: str) -> None:
        self._latch, self._latch_reason = kind, reason
        self._enabled = False
        if kind is not Intervention.EMERGENCY_STOP:
            self._stop_sending()  # the arm does not follow the commands: ramping them down would pull it
        self._intervene(kind, f"{kind.value} latched: {reason}", logging.ERROR)

    def _stop_sending(self) -> None:
        self._resting = True
        if self._last_velocities is not None:
            self._last_velocities = np.zeros(self.limits.num_joints)

    # ------------------------------------------------------------ the filter
    def filter(self, target, now: float) -> SafeCommand:
        """The safe command for this control tick. `target` is joint positions [n], or None to stop smoothly."""
        with self._lock:
            return self._filter(target, now)

    def _filter(self, target, now: float) -> SafeCommand:
        lim = self.limits
        if self._latch is not None:
            return self._hold(self._latch, f"{self._latch.value} latched ({self._latch_reason})", now)
        if self._obs_stamp is None:
            return self._hold(Intervention.NO_OBSERVATION, "no observation yet: nothing moves", now)
        if not self._enabled:
            return self._hold(Intervention.NOT_ENABLED, "motion not enabled by the operator", now)
        if not self._fresh(now):
            return self._hold(Intervention.STALE_OBSERVATION,
                              f"observation age {now - self._obs_stamp:.3f} s beyond {lim.max_observation_age_s} s",
                              now)
        if self._anchor_requested or self._last_positions is None:
            anchor = True
        elif self._following_error_latched():
            return self._issue(None, None, True, [Intervention.FOLLOWING_ERROR])
        else:
            anchor = self._resting  # continuous with where the arm is, not with where it was told to be

        reasons: list[Intervention] = []
        dt = lim.control_period_s
        if anchor:  # from the measured pose at rest; committed only if the step goes out
            q_prev, v_prev = self._obs_positions.copy(), np.zeros(lim.num_joints)
        else:
            q_prev, v_prev = self._last_positions, self._last_velocities
        desired_v = self._desired_velocity(target, q_prev, dt, reasons)
        v = self._limit_velocity(desired_v, q_prev, v_prev, reasons)
        q = self._step(q_prev, v)
        v = (q - q_prev) / dt
        if self.forward_kinematics is not None and not self._step_keeps_workspace(q_prev, q, v):
            message = "step or its braking path would leave the end-effector workspace box"
            if anchor:
                # Still at rest: send nothing, as a hold at rest does. Committing the anchor would
                # send the measured pose every tick, so the hold point would follow an arm that is
                # pushed or sags, and the history of what was really sent (the following-error
                # reference) would be lost.
                self._note(reasons, Intervention.WORKSPACE, message)
                return self._issue(None, None, True, reasons)
            return self._hold(Intervention.WORKSPACE, message, now, reasons)
        if anchor:
            self._anchor(now)
        return self._send(q, v, False, reasons, now)

    def _fresh(self, now: float) -> bool:
        age = now - self._obs_stamp
        return -self.limits.max_clock_skew_s <= age <= self.limits.max_observation_age_s

    def _anchor(self, now: float) -> None:
        self._last_positions = self._obs_positions.copy()
        self._last_velocities = np.zeros(self.limits.num_joints)
        self._anchor_requested = False
        self._resting = False
        self._history.clear()
        self._history.add(now, self._last_positions)

    def _following_error_latched(self) -> bool:
        """Latch when the measured pose is not where the recent commands put it."""
        error = self._history.following_error(self._obs_positions, self._obs_measured_at)
        if error is None or error <= self.limits.max_following_error_rad:
            return False
        self._set_latch(Intervention.FOLLOWING_ERROR,
                        f"measured joints {error:.3f} rad from the commands (tolerance "
                        f"{self.limits.max_following_error_rad} rad)")
        return True

    def _step(self, q_prev: np.ndarray, v: np.ndarray) -> np.ndarray:
        lim = self.limits
        q = q_prev + v * lim.control_period_s
        # Guard against rounding; never pull a position from outside the limits back in one jump.
        return np.clip(q, np.minimum(lim.position_min, q_prev), np.maximum(lim.position_max, q_prev))

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

    def _velocity_bounds(self, q_prev: np.ndarray, v_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per joint [3, n] upper and lower velocity bounds: velocity, acceleration and braking.

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
        return his, los

    def _limit_velocity(self, desired: np.ndarray, q_prev: np.ndarray, v_prev: np.ndarray,
                        reasons: list[Intervention] | None) -> np.ndarray:
        """Clip each joint's velocity to the intersection of its velocity, acceleration and braking bounds."""
        his, los = self._velocity_bounds(q_prev, v_prev)
        hi, lo = his.min(axis=0), los.max(axis=0)
        # Rounding can cross the bounds by ~1e-15; then favour braking (the acceleration bound).
        lo = np.minimum(lo, hi)
        v = np.clip(desired, lo, hi)
        if reasons is not None:
            kinds = (Intervention.VELOCITY_LIMIT, Intervention.ACCELERATION_LIMIT, Intervention.POSITION_LIMIT)
            for j in np.nonzero(desired > hi)[0]:
                self._note(reasons, kinds[int(his[:, j].argmin())], "joint velocity limited")
            for j in np.nonzero(desired < lo)[0]:
                self._note(reasons, kinds[int(los[:, j].argmax())], "joint velocity limited")
        return v

    def _brake(self, q: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One period of braking at full deceleration (per joint): the next (q, v)."""
        v_new = self._limit_velocity(np.zeros_like(v), q, v, None)
        q_new = self._step(q, v_new)
        return q_new, (q_new - q) / self.limits.control_period_s

    def _braking_path(self, q: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
        """The positions a hold starting at (q, v) would command until at rest."""
        lim = self.limits
        steps = int(np.ceil(np.max(np.abs(v) / (lim.acceleration_max * lim.control_period_s)))) + 1
        path = []
        for _ in range(steps):
            if not np.any(v):
                break
            q, v = self._brake(q, v)
            path.append(q)
        return path

    def _step_keeps_workspace(self, q_prev: np.ndarray, q: np.ndarray, v: np.ndarray) -> bool:
        """The step and the braking path after it inside the box, or (when q_prev is outside)
        every point of them strictly closer to it: so that a hold, which follows the braking
        path of the last accepted step, never leaves the box."""
        d_new = max(self._workspace_distance(p) for p in [q, *self._braking_path(q, v)])
        return d_new == 0.0 or d_new < self._workspace_distance(q_prev)

    def _workspace_distance(self, joints: np.ndarray) -> float:
        """How far (m) the furthest checked point is outside the box; inf when kinematics fails."""
        try:
            points = np.asarray(self.forward_kinematics(joints), dtype=np.float64).reshape(-1, 3)
        except Exception as exc:  # a kinematics failure must hold, not crash the loop
            self.log.log("forward_kinematics_error", f"forward kinematics failed: {exc}")
            return float("inf")
        if points.shape[0] == 0 or not np.all(np.isfinite(points)):
            return float("inf")
        lim = self.limits
        excess = np.maximum(lim.workspace_min - points, 0.0) + np.maximum(points - lim.workspace_max, 0.0)
        return float(np.linalg.norm(excess, axis=1).max())

    # ------------------------------------------------------------ bookkeeping
    def _hold(self, kind: Intervention, message: str, now: float,
              reasons: list[Intervention] | None = None) -> SafeCommand:
        """Brake within the acceleration limits, then send nothing (the controller keeps the last point)."""
        reasons = list(reasons or [])
        self._note(reasons, kind, message)
        if self._last_positions is None or self._resting:
            return self._issue(None, None, True, reasons)
        # While the arm is measured, it must follow the ramp; otherwise the ramp would pull it.
        if self._obs_stamp is not None and self._fresh(now) and self._following_error_latched():
            return self._issue(None, None, True, [*reasons, Intervention.FOLLOWING_ERROR])
        q, v = self._brake(self._last_positions, self._last_velocities)
        if not np.any(v):
            self._resting = True  # this is the last point sent until motion restarts
        return self._send(q, v, True, reasons, now)

    def _send(self, q: np.ndarray, v: np.ndarray, holding: bool, reasons: list[Intervention],
              now: float) -> SafeCommand:
        self._last_positions, self._last_velocities = q, v
        self._history.add(now, q)
        return self._issue(q, v, holding, reasons)

    def _note(self, reasons: list[Intervention], kind: Intervention, message: str) -> None:
        if kind not in reasons:
            reasons.append(kind)
            self._intervene(kind, message)

    def _intervene(self, kind: Intervention, message: str, level: int = logging.WARNING) -> None:
        self._counts[kind] += 1
        self.log.log(kind.value, message, level)

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
        """Latched: by the operator's e-stop or by a fault; only resume() releases it."""
        return self._latch is not None

    @property
    def latch(self) -> str | None:
        latch = self._latch
        return None if latch is None else latch.value

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def last_commanded(self) -> np.ndarray | None:
        with self._lock:
            return None if self._last_positions is None else self._last_positions.copy()

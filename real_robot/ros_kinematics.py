"""Turn a policy's action chunk into joint-position waypoints at the control rate.

Two kinds of policy:
- joint policies: each row is the joint target to reach one policy step later;
- end-effector-delta policies (what vla.sim trains: robosuite OSC_POSE): each
  row moves the end effector by (dx, dy, dz) * pos_scale metres and rotates it
  by (rx, ry, rz) * rot_scale radians (world frame), one policy step apart.
  Joint targets come from damped least-squares inverse kinematics on a MuJoCo
  model of the arm, starting from the observed joints.

Row k is reached at time (k + 1) / policy_rate_hz after the observation; the
waypoints are linearly resampled to the control period, so ChunkExecutor can
ensemble absolute joint targets (ensembling deltas would drift).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Callable

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from vla.sim.rotations import matrix_to_rotvec


def resample_waypoints(q0: np.ndarray, waypoints: np.ndarray, policy_rate_hz: float,
                       control_rate_hz: float) -> np.ndarray:
    """[H, n] waypoints at (k+1)/policy_rate after q0 -> [M, n] at j/control_rate, j = 0..M-1."""
    points = np.vstack([q0[None, :], waypoints])
    times = np.arange(points.shape[0]) / policy_rate_hz
    grid = np.arange(0.0, times[-1] + 1e-9, 1.0 / control_rate_hz)
    return np.stack([np.interp(grid, times, points[:, j]) for j in range(points.shape[1])], axis=1)


class ArmKinematics:
    """Forward and inverse kinematics of one site (the tool point) on a MuJoCo arm model. Thread-safe."""

    def __init__(self, model: mujoco.MjModel, joint_names: list[str], site_name: str, base_body: str) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self._lock = threading.RLock()  # one scratch MjData: the control and inference threads share it
        try:
            self.site_id = model.site(site_name).id
            self.base_id = model.body(base_body).id
            joints = [model.joint(name) for name in joint_names]
        except KeyError as exc:
            raise ValueError(f"kinematics model lacks {exc}") from exc
        self.qpos_adr = np.array([j.qposadr[0] for j in joints])
        self.dof_adr = np.array([j.dofadr[0] for j in joints])
        self.lower = np.array([j.range[0] for j in joints])
        self.upper = np.array([j.range[1] for j in joints])
        mujoco.mj_kinematics(model, self.data)
        self.base_pos = self.data.xpos[self.base_id].copy()
        self.base_rot = self.data.xmat[self.base_id].reshape(3, 3).copy()

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool position [3] and rotation [3, 3] in the model's world frame."""
        with self._lock:
            self.data.qpos[self.qpos_adr] = q
            mujoco.mj_kinematics(self.model, self.data)
            return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def position_in_base(self, q: np.ndarray) -> np.ndarray:
        """Tool position in the robot base frame (the frame of the workspace box)."""
        pos, _ = self.forward(q)
        return self.base_rot.T @ (pos - self.base_pos)

    def body_ids(self, names: list[str]) -> list[int]:
        """Model body ids of `names`; a name the model lacks is an error naming it."""
        missing = [name for name in names if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name) < 0]
        if missing:
            raise ValueError(f"the kinematics model has no bodies {missing}")
        return [self.model.body(name).id for name in names]

    def points_in_base(self, q: np.ndarray, body_ids: list[int]) -> np.ndarray:
        """[1 + k, 3]: the tool point, then the origins of `body_ids`, in the robot base frame."""
        with self._lock:
            pos, _ = self.forward(q)
            points = np.vstack([pos[None, :], self.data.xpos[body_ids]])
        return (points - self.base_pos) @ self.base_rot

    def inverse(self, q_start: np.ndarray, pos: np.ndarray, rot: np.ndarray, iterations: int = 4,
                damping: float = 1e-2) -> np.ndarray:
        """Joints near q_start that put the tool at (pos, rot): damped least squares, joint-limited."""
        with self._lock:
            return self._inverse(np.array(q_start, dtype=np.float64), pos, rot, iterations, damping)

    def _inverse(self, q: np.ndarray, pos: np.ndarray, rot: np.ndarray, iterations: int, damping: float) -> np.ndarray:
        jac_p = np.zeros((3, self.model.nv))
        jac_r = np.zeros((3, self.model.nv))
        for _ in range(iterations):
            cur_pos, cur_rot = self.forward(q)
            mujoco.mj_comPos(self.model, self.data)  # the Jacobian needs the com-based motion axes
            err = np.concatenate([pos - cur_pos, matrix_to_rotvec(rot @ cur_rot.T)])
            mujoco.mj_jacSite(self.model, self.data, jac_p, jac_r, self.site_id)
            jac = np.vstack([jac_p[:, self.dof_adr], jac_r[:, self.dof_adr]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping ** 2 * np.eye(6), err)
            q = np.clip(q + dq, self.lower, self.upper)
        return q


def panda_kinematics(task: str = "lift") -> ArmKinematics:
    """The Panda of vla.sim's robosuite tasks, tool point at the gripper's grip site (robosuite's eef)."""
    from vla.sim.robosuite_env import robosuite  # imported quietly there
    from vla.sim.tasks import get_task

    spec = get_task(task)
    env = robosuite.make(spec.env_name, robots=spec.robot, has_renderer=False, has_offscreen_renderer=False,
                         use_camera_obs=False, **dict(spec.env_kwargs))
    try:
        model = copy.deepcopy(env.sim.model._model)
    finally:
        env.close()
    return ArmKinematics(model, [f"robot0_joint{i}" for i in range(1, 8)], "gripper0_grip_site", "robot0_base")


@dataclass
class JointActionBridge:
    """Policy rows are absolute joint targets (the first num_joints entries of each row)."""

    num_joints: int
    policy_rate_hz: float
    control_rate_hz: float

    @property
    def state_dim(self) -> int:
        return self.num_joints

    @property
    def gripper_index(self) -> int:
        """Column of the gripper action, when the policy has one: right after the joints."""
        return self.num_joints

    def policy_state(self, q: np.ndarray, fingers: np.ndarray | None) -> np.ndarray:
        return np.asarray(q, dtype=np.float32)

    def joint_chunk(self, chunk: np.ndarray, q0: np.ndarray, pause: Callable[[], None] | None = None) -> np.ndarray:
        if chunk.ndim != 2 or chunk.shape[1] < self.num_joints:
            raise ValueError(f"joint policy chunk has shape {chunk.shape}, needs [H, >= {self.num_joints}]")
        return resample_waypoints(q0, chunk[:, :self.num_joints], self.policy_rate_hz, self.control_rate_hz)


@dataclass
class EndEffectorDeltaBridge:
    """Policy rows are [dpos(3), drot axis-angle(3), gripper] in [-1, 1], as in vla.sim."""

    kinematics: ArmKinematics
    policy_rate_hz: float
    control_rate_hz: float
    pos_scale: float = 0.05  # robosuite OSC_POSE output_max
    rot_scale: float = 0.5

    state_dim: int = 8
    gripper_index: int = 6  # [dpos, drot, gripper]

    def policy_state(self, q: np.ndarray, fingers: np.ndarray | None) -> np.ndarray:
        """vla.sim's state: eef position, eef axis-angle, two finger positions (zeros if not measured)."""
        pos, rot = self.kinematics.forward(q)
        fingers = np.zeros(2) if fingers is None else fingers
        return np.concatenate([pos, matrix_to_rotvec(rot), fingers]).astype(np.float32)

    def joint_chunk(self, chunk: np.ndarray, q0: np.ndarray, pause: Callable[[], None] | None = None) -> np.ndarray:
        """pause, when given, is called before each row's inverse kinematics (PolicyNode: wait while a
        control tick is due, since every MuJoCo call releases and retakes the GIL)."""
        if chunk.ndim != 2 or chunk.shape[1] < 6:
            raise ValueError(f"end-effector policy chunk has shape {chunk.shape}, needs [H, >= 6]")
        deltas = np.clip(chunk[:, :6], -1.0, 1.0)
        pos, rot = self.kinematics.forward(q0)
        q = np.array(q0, dtype=np.float64)
        waypoints = []
        for row in deltas:
            if pause is not None:
                pause()
            pos = pos + row[:3] * self.pos_scale
            rot = Rotation.from_rotvec(row[3:6] * self.rot_scale).as_matrix() @ rot
            q = self.kinematics.inverse(q, pos, rot)
            waypoints.append(q)
        return resample_waypoints(np.asarray(q0, dtype=np.float64), np.stack(waypoints),
                                  self.policy_rate_hz, self.control_rate_hz)

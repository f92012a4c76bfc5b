"""Future-observation targets (latent-reasoning warm-up): frames ahead in the same episode, padded at its end."""

import numpy as np
import pytest

from tests.data.helpers import flat, random_episodes, write_dataset
from vla.data import LeRobotDataset


def test_future_states_are_the_frames_ahead_in_the_same_episode(tmp_path):
    episodes = random_episodes(seed=1, lengths=(5, 7))
    root = write_dataset(tmp_path / "d", episodes)
    dataset = LeRobotDataset(root, action_horizon=2, future_offsets=[2, 4])
    states = flat(episodes, "observation.state")
    item = dataset[0]
    assert item["future.observation.state"].shape == (2, 8)
    np.testing.assert_array_equal(item["future.observation.state"].numpy(), states[[2, 4]])
    assert item["future_is_pad"].tolist() == [False, False]
    item = dataset[3]  # episode 0 has frames 0..4: frame 5 and 7 lie past its end, the last frame repeats
    np.testing.assert_array_equal(item["future.observation.state"].numpy(), states[[4, 4]])
    assert item["future_is_pad"].tolist() == [True, True]
    item = dataset[5 + 2]  # episode 1's frame 2: 4 is inside, 6 is its last frame
    np.testing.assert_array_equal(item["future.observation.state"].numpy(), states[[5 + 4, 5 + 6]])
    assert item["future_is_pad"].tolist() == [False, False]
    assert "future.observation.state" not in LeRobotDataset(root)[0]  # only when asked for


def test_future_camera_frames_for_the_vla(tmp_path):
    episodes = random_episodes(seed=2, lengths=(4,))
    dataset = LeRobotDataset(write_dataset(tmp_path / "d", episodes), future_offsets=[1, 3],
                             future_keys=["observation.images.agentview"])
    item = dataset[1]
    frames = flat(episodes, "observation.images.agentview")
    np.testing.assert_array_equal(item["future.observation.images.agentview"].numpy(), frames[[2, 3]])
    assert item["future_is_pad"].tolist() == [False, True] and "future.observation.state" not in item


def test_bad_future_offsets_are_refused(tmp_path):
    root = write_dataset(tmp_path / "d", random_episodes(lengths=(3,)))
    with pytest.raises(ValueError, match="future_offsets must be frames ahead"):
        LeRobotDataset(root, future_offsets=[0, 2])

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.data.helpers import FEATURES, random_episodes, write_dataset
from vla.data import DatasetError, LeRobotDataset, LeRobotDatasetWriter

REPO = Path(__file__).resolve().parents[2]


def test_nothing_at_root_until_finalize(tmp_path):
    root = tmp_path / "ds"
    w = LeRobotDatasetWriter(root, fps=10, robot_type="panda", features=FEATURES)
    for frame, task in random_episodes(lengths=(3,))[0]:
        w.add_frame(frame, task)
    w.save_episode()
    assert not root.exists()
    hidden = [p.name for p in tmp_path.iterdir()]
    assert len(hidden) == 1 and hidden[0].startswith(".ds.writing-")
    w.finalize()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_exception_inside_context_leaves_nothing(tmp_path):
    episodes = random_episodes(lengths=(3, 3))
    with pytest.raises(RuntimeError, match="simulator crashed"):
        with LeRobotDatasetWriter(tmp_path / "ds", fps=10, robot_type="panda", features=FEATURES) as w:
            for frame, task in episodes[0]:
                w.add_frame(frame, task)
            w.save_episode()
            raise RuntimeError("simulator crashed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match="does not exist"):
        LeRobotDataset(tmp_path / "ds")


def test_killed_process_leaves_no_dataset_at_root(tmp_path):
    # A collect killed mid-way (no cleanup runs at all) must not leave a loadable dataset.
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.data.helpers import FEATURES, random_episodes
        from vla.data import LeRobotDatasetWriter
        w = LeRobotDatasetWriter({str(tmp_path / "ds")!r}, fps=10, robot_type="panda", features=FEATURES)
        for episode in random_episodes(lengths=(3, 2)):
            for frame, task in episode:
                w.add_frame(frame, task)
            w.save_episode()
        os._exit(1)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert not (tmp_path / "ds").exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".ds.writing-")
    with pytest.raises(DatasetError):
        LeRobotDataset(tmp_path / "ds")


def test_refuses_existing_root(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        LeRobotDatasetWriter(root, fps=10, robot_type="panda", features=FEATURES)
    assert (root / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_root_appearing_during_the_write_is_not_clobbered(tmp_path):
    root = tmp_path / "ds"
    w = LeRobotDatasetWriter(root, fps=10, robot_type="panda", features=FEATURES)
    for frame, task in random_episodes(lengths=(2,))[0]:
        w.add_frame(frame, task)
    w.save_episode()
    root.mkdir()
    (root / "keep.txt").write_text("someone else's")
    with pytest.raises(FileExistsError, match="appeared while writing"):
        w.finalize()
    assert (root / "keep.txt").read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_overwrite_replaces_old_dataset(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, random_episodes(seed=1, lengths=(4, 4, 4)))
    (root / "stray.txt").write_text("old")
    new_episodes = random_episodes(seed=2, lengths=(2,))
    w = LeRobotDatasetWriter(root, fps=10, robot_type="panda", features=FEATURES, overwrite=True)
    for frame, task in new_episodes[0]:
        w.add_frame(frame, task)
    w.save_episode()
    # The old dataset stays readable until the new one is complete.
    assert LeRobotDataset(root).num_episodes == 3
    w.finalize()
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 1 and ds.num_frames == 2
    np.testing.assert_array_equal(ds[1]["action"][0].numpy(), new_episodes[0][1][0]["action"])
    assert not (root / "stray.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary or old copies left


def test_overwrite_aborted_keeps_old_dataset(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, random_episodes(seed=1, lengths=(4, 4)))
    with pytest.raises(KeyboardInterrupt):
        with LeRobotDatasetWriter(root, fps=10, robot_type="panda", features=FEATURES, overwrite=True) as w:
            for frame, task in random_episodes(seed=2, lengths=(2,))[0]:
                w.add_frame(frame, task)
            raise KeyboardInterrupt
    assert LeRobotDataset(root).num_episodes == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_overwrite_refuses_a_plain_file(tmp_path):
    root = tmp_path / "ds"
    root.write_text("not a dataset")
    w = LeRobotDatasetWriter(root, fps=10, robot_type="panda", features=FEATURES, overwrite=True)
    for frame, task in random_episodes(lengths=(2,))[0]:
        w.add_frame(frame, task)
    w.save_episode()
    with pytest.raises(FileExistsError, match="not a directory"):
        w.finalize()
    assert root.read_text() == "not a dataset"


def test_abort_is_idempotent_and_final(tmp_path):
    w = LeRobotDatasetWriter(tmp_path / "ds", fps=10, robot_type="panda", features=FEATURES)
    w.abort()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="aborted"):
        w.save_episode()

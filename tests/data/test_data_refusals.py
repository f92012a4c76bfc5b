import json
import shutil

import pytest

from tests.data.helpers import random_episodes, write_dataset
from vla.data import DatasetError, LeRobotDataset

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("pristine") / "ds", random_episodes(seed=7, lengths=(3, 4)))


@pytest.fixture
def ds_root(pristine, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    return root


def refused(root, *, match: str, names: str) -> DatasetError:
    with pytest.raises(DatasetError, match=match) as info:
        LeRobotDataset(root)
    assert names in str(info.value), f"error does not name {names}: {info.value}"
    return info.value


def edit_info(root, **changes):
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info))


def truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_pristine_copy_loads(ds_root):
    assert LeRobotDataset(ds_root).num_frames == 7


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_missing_directory(tmp_path):
    refused(tmp_path / "nope", match="does not exist", names=str(tmp_path / "nope"))


def test_missing_info(ds_root):
    (ds_root / "meta/info.json").unlink()
    refused(ds_root, match="missing", names="meta/info.json")


def test_info_not_json(ds_root):
    (ds_root / "meta/info.json").write_text("{ not json")
    refused(ds_root, match="not valid JSON", names="meta/info.json")


def test_info_not_an_object(ds_root):
    (ds_root / "meta/info.json").write_text("[1, 2]")
    refused(ds_root, match="JSON object", names="meta/info.json")


def test_wrong_codebase_version(ds_root):
    edit_info(ds_root, codebase_version="v2.1")
    refused(ds_root, match="codebase_version is 'v2.1'", names="meta/info.json")


def test_info_missing_keys(ds_root):
    path = ds_root / "meta/info.json"
    info = json.loads(path.read_text())
    del info["fps"]
    path.write_text(json.dumps(info))
    refused(ds_root, match=r"missing keys \['fps'\]", names="meta/info.json")


def test_video_feature_without_video_path_refused(ds_root):
    path = ds_root / "meta/info.json"
    info = json.loads(path.read_text())
    info["features"]["observation.images.wrist"]["dtype"] = "video"  # video_path stays None
    path.write_text(json.dumps(info))
    refused(ds_root, match="'video_path' is None", names="meta/info.json")


def test_missing_tasks(ds_root):
    (ds_root / "meta/tasks.parquet").unlink()
    refused(ds_root, match="missing", names="meta/tasks.parquet")


def test_truncated_tasks(ds_root):
    truncate(ds_root / "meta/tasks.parquet")
    refused(ds_root, match="unreadable", names="meta/tasks.parquet")


def test_missing_stats(ds_root):
    (ds_root / "meta/stats.json").unlink()
    refused(ds_root, match="normalisation stats", names="meta/stats.json")


def test_stats_not_json(ds_root):
    (ds_root / "meta/stats.json").write_text('{"action": ')
    refused(ds_root, match="unreadable", names="meta/stats.json")


def test_stats_missing_a_feature(ds_root):
    path = ds_root / "meta/stats.json"
    stats = json.loads(path.read_text())
    del stats["action"]["std"]
    path.write_text(json.dumps(stats))
    refused(ds_root, match=r"no \['std'\] statistics for feature 'action'", names="meta/stats.json")


def test_missing_episodes(ds_root):
    (ds_root / EPISODES).unlink()
    refused(ds_root, match="no episode metadata", names="meta/episodes")


def test_truncated_episodes(ds_root):
    truncate(ds_root / EPISODES)
    refused(ds_root, match="unreadable episode metadata", names=EPISODES)


def test_missing_data_file(ds_root):
    (ds_root / DATA).unlink()
    refused(ds_root, match="data file listed in the episode metadata is missing", names=DATA)


def test_truncated_data_file(ds_root):
    truncate(ds_root / DATA, keep=0.9)
    refused(ds_root, match="unreadable data file", names=DATA)


def test_rows_disagree_with_total_frames(ds_root):
    edit_info(ds_root, total_frames=8)
    refused(ds_root, match="7 rows in the data files, info.json says total_frames=8", names="data")


def test_episode_count_disagrees(ds_root):
    edit_info(ds_root, total_episodes=3)
    refused(ds_root, match="2 episodes listed", names="meta/episodes")


def test_feature_missing_from_data(ds_root):
    path = ds_root / "meta/info.json"
    info = json.loads(path.read_text())
    info["features"]["observation.environment_state"] = {"dtype": "float32", "shape": [3], "names": None}
    path.write_text(json.dumps(info))
    refused(ds_root, match=r"missing from the data: \['observation.environment_state'\]", names="data")


def test_standard_feature_missing_from_info(ds_root):
    path = ds_root / "meta/info.json"
    info = json.loads(path.read_text())
    del info["features"]["task_index"]
    path.write_text(json.dumps(info))
    refused(ds_root, match="'task_index'", names="meta/info.json")


def test_stray_extra_data_file(ds_root):
    # lerobot reads every data file; an extra one means rows nobody accounted for.
    shutil.copy(ds_root / DATA, ds_root / "data/chunk-000/file-001.parquet")
    refused(ds_root, match="14 rows", names="data")

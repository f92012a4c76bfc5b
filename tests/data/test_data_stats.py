import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.data.helpers import CAMERAS, flat, random_episodes, write_dataset
from vla.data import STAT_KEYS, LeRobotDataset, aggregate_stats, compute_stats
from vla.data.stats import FeatureStatsAccumulator

QS = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def test_stat_keys_are_lerobots():
    assert STAT_KEYS == ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")


def test_vector_stats_match_numpy():
    x = np.random.default_rng(0).normal(size=(37, 5)).astype(np.float32) * [1, 2, 3, 4, 5]
    s = compute_stats({"action": x})["action"]
    assert list(s) == list(STAT_KEYS)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(s["mean"], x64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s["std"], x64.std(0), rtol=1e-12)  # population std, as lerobot
    np.testing.assert_array_equal(s["min"], x.min(0))
    np.testing.assert_array_equal(s["max"], x.max(0))
    for key, q in QS.items():
        np.testing.assert_allclose(s[key], np.quantile(x64, q, axis=0), rtol=1e-12)
    assert s["count"].tolist() == [37] and s["count"].dtype == np.int64
    assert all(s[k].shape == (5,) for k in STAT_KEYS if k != "count")


def test_scalar_column_stats_have_shape_one():
    s = compute_stats({"index": np.arange(10, dtype=np.int64)})["index"]
    assert s["mean"].shape == (1,) and s["mean"][0] == 4.5
    assert s["min"].tolist() == [0] and s["min"].dtype == np.int64  # integer min/max stay integers
    assert s["q50"].tolist() == [4.5]


def test_image_stats_per_channel_on_unit_scale():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (6, 9, 11, 3), dtype=np.uint8)
    imgs[..., 2] //= 4  # make the channels differ
    s = compute_stats({"observation.images.cam": imgs})["observation.images.cam"]
    pixels = imgs.reshape(-1, 3).astype(np.float64) / 255.0
    for key in STAT_KEYS:
        if key != "count":
            assert s[key].shape == (3, 1, 1), key
    np.testing.assert_allclose(s["mean"].ravel(), pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s["std"].ravel(), pixels.std(0), rtol=1e-10)
    np.testing.assert_allclose(s["min"].ravel(), pixels.min(0))
    np.testing.assert_allclose(s["max"].ravel(), pixels.max(0))
    for key, q in QS.items():
        np.testing.assert_allclose(s[key].ravel(), np.quantile(pixels, q, axis=0), rtol=1e-12, atol=1e-15)
    assert s["count"].tolist() == [6]  # frames, like lerobot


def test_image_accumulator_over_batches_equals_one_batch():
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (10, 4, 5, 3), dtype=np.uint8)
    acc = FeatureStatsAccumulator(is_image=True)
    acc.update(imgs[:3])
    acc.update(imgs[3:])
    together = compute_stats({"img": imgs})["img"]
    for key in STAT_KEYS:
        np.testing.assert_array_equal(acc.result()[key], together[key])


def test_single_frame_stats():
    s = compute_stats({"a": np.array([[1.0, -2.0]], dtype=np.float32)})["a"]
    assert s["std"].tolist() == [0.0, 0.0]
    assert s["q01"].tolist() == s["q99"].tolist() == [1.0, -2.0]


def test_empty_and_bad_input_refused():
    with pytest.raises(ValueError, match="empty"):
        FeatureStatsAccumulator(is_image=False).result()
    with pytest.raises(ValueError, match="non-empty"):
        compute_stats({"a": np.zeros((0, 3), np.float32)})
    acc = FeatureStatsAccumulator(is_image=False)
    acc.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        acc.update(np.zeros((2, 4)))


def test_aggregate_matches_stats_of_concatenation():
    rng = np.random.default_rng(3)
    parts = [rng.normal(loc=i, scale=i + 1, size=(n, 4)) for i, n in enumerate([5, 11, 2])]
    imgs = [rng.integers(0, 256, (n, 3, 4, 3), dtype=np.uint8) for n in (2, 7, 1)]
    per_episode = [compute_stats({"x": p, "img": im}) for p, im in zip(parts, imgs, strict=True)]
    agg = aggregate_stats(per_episode)
    full = compute_stats({"x": np.concatenate(parts), "img": np.concatenate(imgs)})
    for feature in ("x", "img"):
        for key in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(agg[feature][key], full[feature][key], rtol=1e-10, atol=1e-12)
        assert agg[feature]["count"].tolist() == full[feature]["count"].tolist()
        # Quantiles are lerobot's count-weighted approximation: shape only.
        assert agg[feature]["q50"].shape == full[feature]["q50"].shape


def test_aggregate_refuses_nothing():
    with pytest.raises(ValueError):
        aggregate_stats([])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    episodes = random_episodes(seed=4, lengths=(6, 3, 9))
    return write_dataset(tmp_path_factory.mktemp("st") / "ds", episodes), episodes


def test_written_dataset_stats_are_stats_of_all_data(written):
    root, episodes = written
    on_disk = json.loads((root / "meta/stats.json").read_text())
    arrays = {key: flat(episodes, key) for key in ["observation.state", "action", *CAMERAS]}
    n = sum(len(e) for e in episodes)
    arrays["index"] = np.arange(n)
    arrays["frame_index"] = np.concatenate([np.arange(len(e)) for e in episodes])
    expected = compute_stats(arrays)
    for feature, stats in expected.items():
        assert list(on_disk[feature]) == list(STAT_KEYS)
        for key in STAT_KEYS:
            np.testing.assert_allclose(
                np.asarray(on_disk[feature][key]), stats[key], rtol=1e-12, err_msg=f"{feature}/{key}"
            )
    assert set(on_disk) == {
        "observation.state",
        "action",
        *CAMERAS,
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
    }


def test_per_episode_stats_columns(written):
    root, episodes = written
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for row, episode in zip(rows, episodes, strict=True):
        state = np.stack([f["observation.state"] for f, _ in episode])
        expected = compute_stats({"s": state})["s"]
        for key in STAT_KEYS:
            np.testing.assert_allclose(np.asarray(row[f"stats/observation.state/{key}"]), expected[key], rtol=1e-12)
        img = np.asarray(row["stats/observation.images.wrist/mean"])
        assert img.shape == (3, 1, 1)
        assert row["stats/observation.images.wrist/count"] == [len(episode)]
    # The dataset mean is the count-weighted mean of the episode means.
    agg = aggregate_stats([{"s": {k: np.asarray(r[f"stats/observation.state/{k}"]) for k in STAT_KEYS}} for r in rows])
    on_disk = json.loads((root / "meta/stats.json").read_text())["observation.state"]
    np.testing.assert_allclose(agg["s"]["mean"], on_disk["mean"], rtol=1e-10)
    np.testing.assert_allclose(agg["s"]["std"], on_disk["std"], rtol=1e-10)


def test_reader_exposes_stats_as_float32_arrays(written):
    root, episodes = written
    stats = LeRobotDataset(root).stats
    assert stats["action"]["mean"].dtype == np.float32 and stats["action"]["mean"].shape == (7,)
    assert stats["action"]["count"].dtype == np.int64 and stats["action"]["count"].tolist() == [18]
    assert stats["observation.images.agentview"]["std"].shape == (3, 1, 1)
    np.testing.assert_allclose(stats["action"]["mean"], flat(episodes, "action").astype(np.float64).mean(0), rtol=1e-6)

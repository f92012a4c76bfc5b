"""Normalisation statistics in the layout LeRobotDataset v3.0 stores them.

Per feature: min, max, mean, std, count and the quantiles q01, q10, q50, q90,
q99 (the set lerobot 0.4.4 writes).
- Vector features [N, D]: each statistic has shape [D]; scalar columns [N]
  give shape [1]. `count` is always shape [1], the number of frames.
- Images uint8 [N, H, W, C]: per channel on the [0, 1] scale, shape [C, 1, 1]
  (lerobot's layout, broadcastable against channel-first images); `count` is
  the number of frames.

Differences from lerobot, on purpose: quantiles are exact (numpy's linear
interpolation) rather than read off a 5000-bin running histogram, and image
statistics use every frame rather than a subsample of about 100. For images
the exactness is cheap: pixels are uint8, so a 256-bin histogram per channel
holds every statistic exactly without keeping the pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
# The order lerobot writes them in, kept so files diff cleanly against lerobot's.
STAT_KEYS: tuple[str, ...] = ("min", "max", "mean", "std", "count", *QUANTILES)

FeatureStats = dict[str, np.ndarray]


def is_image_array(array: np.ndarray) -> bool:
    """True for a batch of channel-last uint8 images [N, H, W, C]."""
    return array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] in (1, 3, 4)


class FeatureStatsAccumulator:
    """Collects batches of one feature and returns its exact statistics.

    Images are folded into per-channel histograms as they arrive; other
    features keep their rows (state and action vectors are small).
    """

    def __init__(self, *, is_image: bool):
        self.is_image = is_image
        self._frames = 0
        self._histograms: np.ndarray | None = None  # [C, 256] pixel counts
        self._rows: list[np.ndarray] = []
        self._row_shape: tuple[int, ...] | None = None

    @property
    def count(self) -> int:
        return self._frames

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch)
        if batch.ndim == 0 or batch.shape[0] == 0:
            raise ValueError(f"stats need a non-empty batch with a leading frame axis, got shape {batch.shape}")
        if self.is_image:
            self._update_image(batch)
        else:
            self._update_rows(batch)
        self._frames += batch.shape[0]

    def _update_image(self, batch: np.ndarray) -> None:
        if not is_image_array(batch):
            raise ValueError(f"image stats need uint8 [N, H, W, C], got {batch.dtype} {batch.shape}")
        channels = batch.shape[-1]
        if self._histograms is None:
            self._histograms = np.zeros((channels, 256), dtype=np.int64)
        elif self._histograms.shape[0] != channels:
            raise ValueError(f"image batch has {channels} channels, earlier batches had {self._histograms.shape[0]}")
        for c in range(channels):
            self._histograms[c] += np.bincount(batch[..., c].ravel(), minlength=256)

    def _update_rows(self, batch: np.ndarray) -> None:
        if self._row_shape is None:
            self._row_shape = batch.shape[1:]
        elif batch.shape[1:] != self._row_shape:
            raise ValueError(f"batch rows have shape {batch.shape[1:]}, earlier batches had {self._row_shape}")
        self._rows.append(np.array(batch, copy=True))

    def result(self) -> FeatureStats:
        if self._frames == 0:
            raise ValueError("no data: cannot compute statistics of an empty feature")
        stats = self._image_result() if self.is_image else self._rows_result()
        stats["count"] = np.array([self._frames], dtype=np.int64)
        return {key: stats[key] for key in STAT_KEYS}

    def _rows_result(self) -> FeatureStats:
        data = np.concatenate(self._rows, axis=0)
        if data.ndim == 1:  # scalar columns are stored as shape [1] stats
            data = data[:, None]
        as_float = data.astype(np.float64)
        stats: FeatureStats = {
            # min/max keep integer dtypes, like lerobot (they index, not scale).
            "min": data.min(axis=0),
            "max": data.max(axis=0),
            "mean": as_float.mean(axis=0),
            "std": as_float.std(axis=0),
        }
        for key, q in QUANTILES.items():
            stats[key] = np.quantile(as_float, q, axis=0)
        return stats

    def _image_result(self) -> FeatureStats:
        hist = self._histograms
        assert hist is not None
        levels = np.arange(256, dtype=np.float64) / 255.0
        n = hist.sum(axis=1).astype(np.float64)
        mean = hist @ levels / n
        var = (hist * (levels[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
        nonzero = hist > 0
        stats: FeatureStats = {
            "min": levels[nonzero.argmax(axis=1)],
            "max": levels[255 - nonzero[:, ::-1].argmax(axis=1)],
            "mean": mean,
            "std": np.sqrt(var),
        }
        cumulative = np.cumsum(hist, axis=1)
        for key, q in QUANTILES.items():
            stats[key] = np.array([_histogram_quantile(cumulative[c], q) for c in range(hist.shape[0])]) / 255.0
        return {key: value.reshape(-1, 1, 1) for key, value in stats.items()}


def _histogram_quantile(cumulative: np.ndarray, q: float) -> float:
    """numpy's default ('linear') quantile of integer data given its cumulative histogram."""
    n = int(cumulative[-1])
    position = q * (n - 1)
    lower = int(np.floor(position))
    upper = min(lower + 1, n - 1)
    # The k-th smallest value (0-based) is the first level whose cumulative count exceeds k.
    v_lower = int(np.searchsorted(cumulative, lower, side="right"))
    v_upper = int(np.searchsorted(cumulative, upper, side="right"))
    return v_lower + (position - lower) * (v_upper - v_lower)


def compute_stats(arrays: Mapping[str, np.ndarray]) -> dict[str, FeatureStats]:
    """Statistics of each feature; a uint8 [N, H, W, C] array is treated as images."""
    out: dict[str, FeatureStats] = {}
    for key, array in arrays.items():
        array = np.asarray(array)
        accumulator = FeatureStatsAccumulator(is_image=is_image_array(array))
        accumulator.update(array)
        out[key] = accumulator.result()
    return out


def aggregate_stats(stats_list: Sequence[Mapping[str, FeatureStats]]) -> dict[str, FeatureStats]:
    """Combine per-episode statistics into dataset statistics.

    mean, std (population), min, max and count combine exactly: count-weighted
    means, and variances by the parallel formula E[(x - m)^2] =
    sum_i n_i (s_i^2 + (m_i - m)^2) / n. Quantiles do not combine exactly; here
    they are count-weighted means of the episodes' quantiles, lerobot's
    approximation. Our writer does not rely on it: our datasets are small, so
    it recomputes dataset quantiles from all the data instead.
    """
    if not stats_list:
        raise ValueError("aggregate_stats needs at least one stats dict")
    keys = list(dict.fromkeys(key for stats in stats_list for key in stats))
    return {key: _aggregate_feature([stats[key] for stats in stats_list if key in stats]) for key in keys}


def _aggregate_feature(parts: list[Mapping[str, np.ndarray]]) -> FeatureStats:
    counts = np.array([int(np.asarray(p["count"]).reshape(-1)[0]) for p in parts], dtype=np.int64)
    total = int(counts.sum())
    if total <= 0:
        raise ValueError("cannot aggregate statistics with a total count of 0")
    means = np.stack([np.asarray(p["mean"], dtype=np.float64) for p in parts])
    stds = np.stack([np.asarray(p["std"], dtype=np.float64) for p in parts])
    weights = (counts / total).reshape((-1,) + (1,) * (means.ndim - 1))
    mean = (weights * means).sum(axis=0)
    var = (weights * (stds**2 + (means - mean) ** 2)).sum(axis=0)
    out: FeatureStats = {
        "min": np.min(np.stack([np.asarray(p["min"]) for p in parts]), axis=0),
        "max": np.max(np.stack([np.asarray(p["max"]) for p in parts]), axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([total], dtype=np.int64),
    }
    for key in QUANTILES:
        if all(key in p for p in parts):
            out[key] = (weights * np.stack([np.asarray(p[key], dtype=np.float64) for p in parts])).sum(axis=0)
    return out


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    """Nested lists, as in meta/stats.json."""
    return {feature: {key: np.asarray(value).tolist() for key, value in ft.items()} for feature, ft in stats.items()}


def stats_from_json(payload: Mapping[str, Mapping[str, object]]) -> dict[str, FeatureStats]:
    """Arrays from meta/stats.json: float32 for every statistic, int64 for count.

    float32 because normalisation runs in float32; the file keeps full precision.
    """
    out: dict[str, FeatureStats] = {}
    for feature, ft in payload.items():
        if not isinstance(ft, Mapping):
            raise ValueError(f"stats for {feature!r} must be an object, got {type(ft).__name__}")
        out[feature] = {
            key: np.asarray(value, dtype=np.int64 if key == "count" else np.float32) for key, value in ft.items()
        }
    return out

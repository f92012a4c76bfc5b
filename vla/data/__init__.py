"""LeRobotDataset v3.0 on disk: writing, reading, normalisation statistics."""

from vla.data.dataset import LeRobotDataset
from vla.data.errors import DatasetError
from vla.data.schema import CODEBASE_VERSION
from vla.data.stats import QUANTILES, STAT_KEYS, aggregate_stats, compute_stats
from vla.data.writer import LeRobotDatasetWriter

__all__ = [
    "CODEBASE_VERSION",
    "DatasetError",
    "LeRobotDataset",
    "LeRobotDatasetWriter",
    "QUANTILES",
    "STAT_KEYS",
    "aggregate_stats",
    "compute_stats",
]

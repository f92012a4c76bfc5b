"""Policy versions on trajectories: staleness is measured against the learner and bounded."""

from types import SimpleNamespace

import pytest

from vla.rl.staleness import StalenessError, staleness_stats


def trajs(*versions):
    return [SimpleNamespace(policy_version=v) for v in versions]


def test_on_policy_data_has_staleness_zero():
    assert staleness_stats(trajs(3, 3), 3, 0) == {"policy_version": 3.0, "staleness_max": 0.0, "staleness_mean": 0.0}


def test_older_data_is_measured_and_allowed_up_to_the_bound():
    assert staleness_stats(trajs(1, 3), 3, 2) == {"policy_version": 1.0, "staleness_max": 2.0, "staleness_mean": 1.0}


def test_data_past_the_bound_stops_the_update_naming_it():
    with pytest.raises(StalenessError, match="policy version 1 .* at version 3: staleness 2 exceeds --max_staleness=1"):
        staleness_stats(trajs(1, 3), 3, 1)


def test_a_version_from_the_future_is_a_bug():
    with pytest.raises(ValueError, match="newer than the learner's 2"):
        staleness_stats(trajs(3), 2, 5)

"""Policy versions on trajectories: how stale the data an update learns from is, and its bound.

A trajectory's ``policy_version`` is the number of learner updates the weights that collected it had
seen. Its staleness, when an update learns from it, is the learner's version then minus that. The
on-policy loop collects with the current weights and updates once, so every staleness is 0; the
check is there for learners that collect ahead of the update (asynchronous rollout workers, replay),
whose bias grows with it: --max_staleness bounds it, and every iteration logs it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class StalenessError(RuntimeError):
    """An update was about to learn from trajectories older than --max_staleness allows."""


def staleness_stats(trajectories: Sequence, learner_version: int, max_staleness: int) -> dict[str, float]:
    """{"policy_version": oldest version, "staleness_max", "staleness_mean"}; StalenessError past the bound."""
    versions = [int(t.policy_version) for t in trajectories]
    if not versions:
        return {"policy_version": float(learner_version), "staleness_max": 0.0, "staleness_mean": 0.0}
    if max(versions) > learner_version:
        raise ValueError(f"a trajectory carries policy version {max(versions)}, newer than the learner's "
                         f"{learner_version}: versions must count learner updates")
    ages = [learner_version - v for v in versions]
    if max(ages) > max_staleness:
        raise StalenessError(f"trajectories collected with policy version {min(versions)} reached the learner at "
                             f"version {learner_version}: staleness {max(ages)} exceeds --max_staleness={max_staleness}")
    return {"policy_version": float(min(versions)), "staleness_max": float(max(ages)),
            "staleness_mean": float(np.mean(ages))}

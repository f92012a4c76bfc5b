"""SRPO's progress reward from trajectory embeddings (docs/ALGORITHMS.md section 3), in numpy.

Per task of the batch:
1. the success embeddings, standardised per dimension, are clustered with DBSCAN (eps 0.5,
   min_samples 2); the centres are the clusters' means in embedding space (no cluster found: the
   mean of all successes). Standardising is for DBSCAN's eps only: it gives eps one meaning
   whatever the encoder's scale;
2. each failure's distance d_i to its nearest centre;
3. failure reward, released-code formula (default): n_i = (d_i - min d) / (max d - min d) (0.5 when
   the range is below 1e-6), g_i = 0.6 * sigmoid(10 * (0.5 - n_i)); paper formula: g_i = 1 - Phi(z_i),
   z_i = (d_i - mean d) / std d (z = 0 when std d is below 1e-6), so a larger distance earns less;
   success reward 1;
4. a task with no success in the batch has no reference: its trajectories keep the binary reward (0).

Everything is a function of the (embedding, success, task) set: shuffling the batch permutes the
rewards and changes nothing else, to the last bit. The successes are put in a canonical (lexicographic)
order before any sum over them, and means over failures are taken over sorted distances, because a
floating-point sum depends on its order. (With min_samples 2 every clustered point is a DBSCAN core
point, so the clusters do not depend on the order DBSCAN visits the points in.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FORMULAS = ("released", "paper")
RANGE_EPS = 1e-6  # a distance range (or std) below this: every failure is equally far
RELEASED_SCALE, RELEASED_SLOPE = 0.6, 10.0


@dataclass
class ProgressRewards:
    """Per-trajectory rewards and what the computation found, for the logs."""

    rewards: np.ndarray  # [T] float64: 1 for successes, graded failures, 0 where a task had no success
    clusters: dict[str, int] = field(default_factory=dict)  # task -> centres used (DBSCAN clusters, or 1 = mean)
    dbscan_clusters: dict[str, int] = field(default_factory=dict)  # task -> clusters DBSCAN itself found
    no_success_tasks: list[str] = field(default_factory=list)  # tasks that fell back to the binary reward
    graded: np.ndarray | None = None  # [T] bool: failures that got a progress reward


def success_centres(success_embeddings: np.ndarray, eps: float = 0.5, min_samples: int = 2) -> tuple[np.ndarray, int]:
    """Cluster centres [C, D] of a task's success embeddings [S, D] (S >= 1), and how many clusters DBSCAN
    found (0: it found none, and the one centre is the mean of all successes)."""
    from sklearn.cluster import DBSCAN

    x = np.asarray(success_embeddings, dtype=np.float64)
    std = x.std(axis=0)
    scaled = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)  # a constant dimension stays 0 (StandardScaler's rule)
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit(scaled).labels_
    found = sorted(set(labels.tolist()) - {-1})
    if not found:
        return x.mean(axis=0, keepdims=True), 0
    return np.stack([x[labels == k].mean(axis=0) for k in found]), len(found)


def nearest_distances(embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[N] Euclidean distance of each embedding [N, D] to its nearest centre [C, D]."""
    diff = np.asarray(embeddings, dtype=np.float64)[:, None, :] - np.asarray(centres, dtype=np.float64)[None]
    return np.sqrt((diff ** 2).sum(-1)).min(axis=1)


def released_failure_rewards(distances: np.ndarray) -> np.ndarray:
    """g = 0.6 * sigmoid(10 * (0.5 - n)), n the min-max normalised distance: in [0.6 sigmoid(-5), 0.6 sigmoid(5)]."""
    d = np.asarray(distances, dtype=np.float64)
    span = d.max() - d.min()
    n = (d - d.min()) / span if span >= RANGE_EPS else np.full_like(d, 0.5)
    return RELEASED_SCALE / (1.0 + np.exp(-RELEASED_SLOPE * (0.5 - n)))


def paper_failure_rewards(distances: np.ndarray) -> np.ndarray:
    """g = 1 - Phi((d - mean d) / std d): the standardised distance through the normal CDF, in (0, 1),
    decreasing in d."""
    d = np.asarray(distances, dtype=np.float64)
    ordered = np.sort(d)  # mean and std of the sorted distances: the same bits in any batch order
    mean, std = ordered.mean(), ordered.std()
    z = (d - mean) / std if std >= RANGE_EPS else np.zeros_like(d)
    return np.array([0.5 * math.erfc(v / math.sqrt(2.0)) for v in z])  # 1 - Phi(z), exact in the tails


def progress_rewards(embeddings: np.ndarray, success: np.ndarray, tasks: list[str], formula: str = "released",
                     eps: float = 0.5, min_samples: int = 2) -> ProgressRewards:
    """Per-trajectory rewards [T] from embeddings [T, D], success flags [T] and task names (see the module
    docstring). The embeddings must be finite (the caller checks and reports)."""
    if formula not in FORMULAS:
        raise ValueError(f"reward formula {formula!r} is not one of {', '.join(FORMULAS)}")
    h = np.asarray(embeddings, dtype=np.float64)
    ok = np.asarray(success, dtype=bool)
    if h.ndim != 2 or h.shape[0] != ok.shape[0] or len(tasks) != ok.shape[0]:
        raise ValueError(f"embeddings {h.shape}, success {ok.shape} and {len(tasks)} tasks do not match")
    rewards = ok.astype(np.float64)
    graded = np.zeros_like(ok)
    out = ProgressRewards(rewards, graded=graded)
    names = np.asarray(tasks, dtype=object)
    for task in sorted(set(tasks)):
        mine = names == task
        wins, losses = np.flatnonzero(mine & ok), np.flatnonzero(mine & ~ok)
        if wins.size == 0:
            out.no_success_tasks.append(task)  # no reference: the binary reward (0) stays
            continue
        wins = wins[np.lexsort(h[wins].T[::-1])]  # canonical order (see the module docstring)
        centres, found = success_centres(h[wins], eps, min_samples)
        out.clusters[task], out.dbscan_clusters[task] = len(centres), found
        if losses.size == 0:
            continue
        d = nearest_distances(h[losses], centres)
        rewards[losses] = released_failure_rewards(d) if formula == "released" else paper_failure_rewards(d)
        graded[losses] = True
    return out

"""SRPO's progress reward: every property of docs/ALGORITHMS.md section 3, and the video sampling."""

import math

import numpy as np
import pytest
import torch

from vla.rl.advantages import dynamic_sampling_keep, group_normalized_advantages
from vla.rl.srpo.frames import NoFramesError, frame_indices, trajectory_video
from vla.rl.srpo.reward import (nearest_distances, paper_failure_rewards, progress_rewards, released_failure_rewards,
                                success_centres)

LOW, HIGH = 0.6 / (1 + math.exp(5)), 0.6 / (1 + math.exp(-5))  # 0.6 sigmoid(-5), 0.6 sigmoid(5)


def batch(seed=0, n=12, d=6, tasks=("a",)):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d))
    success = rng.random(n) < 0.4
    success[0], success[1] = True, False
    return h, success, [tasks[i % len(tasks)] for i in range(n)]


def test_bounds_of_the_released_formula():
    assert LOW == pytest.approx(0.00402, abs=1e-5) and HIGH == pytest.approx(0.59598, abs=1e-5)
    for seed in range(20):
        h, success, tasks = batch(seed, n=30)
        r = progress_rewards(h, success, tasks)
        assert np.all(r.rewards[success] == 1.0)  # exactly 1
        failures = r.rewards[~success]
        assert np.all(failures >= LOW - 1e-15) and np.all(failures <= HIGH + 1e-15)
        assert failures.min() == pytest.approx(LOW) and failures.max() == pytest.approx(HIGH)  # nearest, farthest


def test_identical_failure_embeddings_get_exactly_0_3():
    h, success, tasks = batch(1)
    h[~success] = h[~success][0]
    for formula, expected in (("released", 0.3), ("paper", 0.5)):
        r = progress_rewards(h, success, tasks, formula)
        assert np.all(r.rewards[~success] == expected)
    assert released_failure_rewards(np.array([2.0]))[0] == 0.3  # a lone failure too


@pytest.mark.parametrize("formula", ["released", "paper"])
def test_reward_decreases_strictly_with_distance(formula):
    d = np.sort(np.random.default_rng(0).uniform(0, 5, 40))
    g = released_failure_rewards(d) if formula == "released" else paper_failure_rewards(d)
    assert np.all(np.diff(g) < 0)
    assert np.all((g > 0) & (g < 1))
    # and through the whole computation: failures placed ever farther from the one success
    h = np.zeros((6, 3))
    h[1:, 0] = [0.5, 1.0, 2.0, 3.5, 5.0]
    r = progress_rewards(h, np.array([True] + [False] * 5), ["t"] * 6, formula)
    assert np.all(np.diff(r.rewards[1:]) < 0)


def test_shuffling_the_batch_changes_nothing():
    h, success, tasks = batch(3, n=40, tasks=("a", "b"))
    rng = np.random.default_rng(9)  # successes near three prototypes, so DBSCAN finds clusters
    prototypes = rng.normal(size=(3, h.shape[1])) * 5
    h[success] = prototypes[rng.integers(3, size=success.sum())] + 0.01 * rng.normal(size=(success.sum(), h.shape[1]))
    base = progress_rewards(h, success, tasks)
    assert sum(base.dbscan_clusters.values()) > 0
    for seed in range(5):
        p = np.random.default_rng(seed).permutation(len(h))
        shuffled = progress_rewards(h[p], success[p], [tasks[i] for i in p])
        assert np.array_equal(shuffled.rewards, base.rewards[p])
        assert shuffled.clusters == base.clusters


def test_all_success_or_all_failure_groups_get_zero_advantage():
    # groups 0: all success, 1: all failure, 2: mixed; one task, so group 1's failures are graded
    success = np.array([True] * 4 + [False] * 4 + [True, False, False, True])
    groups = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    h = np.random.default_rng(0).normal(size=(12, 5))
    r = progress_rewards(h, success, ["t"] * 12)
    adv = group_normalized_advantages(torch.tensor(r.rewards, dtype=torch.float32), groups)
    keep = dynamic_sampling_keep(torch.tensor(success, dtype=torch.float32), groups)
    effective = torch.where(keep, adv, torch.zeros_like(adv))
    assert torch.all(effective[:8] == 0)  # all-success: equal rewards; all-failure: dropped by dynamic sampling
    assert torch.all(adv[:4] == 0) and torch.any(effective[8:] != 0)


def test_a_task_without_success_keeps_the_binary_reward():
    h, success, _ = batch(4, n=10)
    tasks = ["a"] * 5 + ["b"] * 5
    success[5:] = False
    r = progress_rewards(h, success, tasks)
    assert r.no_success_tasks == ["b"] and np.all(r.rewards[5:] == 0.0) and not r.graded[5:].any()


def test_dbscan_centres_and_the_mean_fallback():
    tight = np.array([[0.0, 0.0], [0.01, 0.0], [10.0, 10.0], [10.01, 10.0]])  # two pairs
    centres, found = success_centres(tight)
    assert found == 2 and np.allclose(sorted(centres[:, 0]), [0.005, 10.005])
    spread = np.random.default_rng(0).normal(size=(5, 64))  # in 64 dims nothing is within eps 0.5
    centres, found = success_centres(spread)
    assert found == 0 and np.allclose(centres, spread.mean(0, keepdims=True))
    assert np.allclose(nearest_distances(np.array([[0.0, 1.0]]), np.array([[0.0, 0.0], [0.0, 3.0]])), [1.0])
    one, found = success_centres(spread[:1])  # a single success: its own embedding
    assert found == 0 and np.array_equal(one, spread[:1])


def test_videos_are_sampled_uniformly_and_short_ones_cycle():
    assert frame_indices(33, 5).tolist() == [0, 8, 16, 24, 32]
    assert frame_indices(3, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(4)]
    assert trajectory_video(frames, 2)[:, 0, 0, 0].tolist() == [0, 3]
    with pytest.raises(NoFramesError, match="trajectory 7 has no frames"):
        trajectory_video([], 4, "trajectory 7")

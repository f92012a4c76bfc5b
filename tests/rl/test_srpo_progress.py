"""A batch's progress reward: bad input is reported by name and falls back to binary rewards (counted);
the logs carry the failure-reward distribution, the clusters and the Spearman correlation."""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vla.config import SRPOConfig
from vla.rl.rollout import Trajectory
from vla.rl.srpo.encoders import Encoder
from vla.rl.srpo.progress import ProgressReward, ProgressRewardWarning, spearman


def brightness_encoder(dim=3, poison=None):
    """Embedding = mean colour of the video (a stand-in world model whose 'progress' is brightness)."""
    def embed(videos):
        h = videos.float().mean(dim=(1, 2, 3))[:, :dim]
        if poison is not None:
            h[poison] = float("nan")
        return h
    return Encoder("bright", 3, embed, torch.device("cpu"))


def rollouts(levels, success, dense=None, n_frames=3):
    trajs = []
    for i, (level, ok) in enumerate(zip(levels, success)):
        frames = [np.full((4, 4, 3), int(level * (f + 1) / n_frames), np.uint8) for f in range(n_frames)]
        trajs.append(Trajectory(i, i // 4, 100 + i // 4, "task", ok, 10, 0.0 if dense is None else dense[i],
                                frames=frames))
    return SimpleNamespace(trajectories=trajs)


LEVELS = [250, 40, 120, 200, 250, 80, 160, 10]
SUCCESS = [True, False, False, False, True, False, False, False]


def test_failures_closer_to_the_successes_earn_more_and_the_logs_say_so():
    reward = ProgressReward(brightness_encoder(), SRPOConfig(n_frames=4), dense_reward=True)
    dense = [lvl / 100 for lvl in LEVELS]  # the simulator's progress agrees with the world model's
    g, stats = reward(rollouts(LEVELS, SUCCESS, dense))
    assert g.dtype == torch.float32 and g[0] == 1.0 and g[4] == 1.0
    failures = [i for i, ok in enumerate(SUCCESS) if not ok]
    order = sorted(failures, key=lambda i: LEVELS[i])
    assert all(g[a] < g[b] for a, b in zip(order, order[1:]))  # brighter = closer to success = more reward
    assert stats["progress_fallback"] == 0.0 and stats["no_success_tasks"] == 0.0
    assert stats["success_clusters"] == 1.0 and stats["dbscan_clusters"] == 1.0  # two identical successes
    assert len(stats["failure_rewards"]) == 6 and stats["failure_reward_max"] == pytest.approx(0.59598, abs=1e-5)
    assert stats["progress_spearman"] == pytest.approx(1.0) and stats["progress_spearman_all"] == pytest.approx(1.0)
    assert stats["reward_s"] >= 0


@pytest.mark.parametrize("problem,match", [
    ("no_frames", r"trajectory 2 \(group 0, seed 100\) has no frames"),
    ("nan", r"NaN/Inf in the embeddings of trajectories \[3\]"),
    ("size", r"encoder output size mismatch: .*expected \[8, 5\] \(--srpo.embedding_dim=5\)"),
])
def test_bad_input_is_named_and_the_batch_falls_back_to_binary(problem, match):
    batch = rollouts(LEVELS, SUCCESS)
    cfg = SRPOConfig(n_frames=4, embedding_dim=5 if problem == "size" else 0)
    encoder = brightness_encoder(poison=3 if problem == "nan" else None)
    if problem == "no_frames":
        batch.trajectories[2].frames = []
    with pytest.warns(ProgressRewardWarning, match=match):
        g, stats = ProgressReward(encoder, cfg)(batch)
    assert g.tolist() == [float(s) for s in SUCCESS]
    assert stats["progress_fallback"] == 1.0 and "failure_rewards" not in stats
    assert re.search(match, stats["progress_fallback_reason"])


def test_a_batch_without_success_needs_no_encoder():
    def fail(videos):
        raise AssertionError("the encoder ran on a batch with no success")
    g, stats = ProgressReward(Encoder("x", 3, fail, torch.device("cpu")), SRPOConfig())(
        rollouts(LEVELS, [False] * 8))
    assert g.tolist() == [0.0] * 8 and stats["no_success_tasks"] == 1.0 and stats["progress_fallback"] == 0.0


def test_spearman_matches_scipy_and_is_undefined_on_constants():
    from scipy.stats import spearmanr

    x, y = np.random.default_rng(0).normal(size=(2, 20))
    y[3] = y[4]  # a tie
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert spearman(np.ones(5), np.arange(5.0)) is None and spearman(np.arange(2.0), np.arange(2.0)) is None

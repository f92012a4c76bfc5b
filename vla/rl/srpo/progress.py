"""The progress reward of a batch of rollouts: videos -> encoder -> rewards (reward.py), with its checks and logs.

Bad input never trains the policy on garbage: a trajectory with no frames, an encoder output of the wrong
size, or an embedding with NaN or Inf is reported by name (a ProgressRewardWarning) and the whole batch
falls back to the binary reward; `progress_fallback` counts it in the history and TensorBoard.

Logged per iteration: the failure rewards (their distribution: the list, a TensorBoard histogram, and
mean / min / max / std), the success clusters, the tasks without a success, and the Spearman correlation
between the progress reward and the simulator's staged dense reward of the same trajectories (the
graded failures: `progress_spearman`; every trajectory of a task with a success: `progress_spearman_all`).
That correlation is how a user sees whether the world model judges progress or noise.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from vla.rl.srpo.encoders import Encoder
from vla.rl.srpo.frames import NoFramesError, trajectory_video
from vla.rl.srpo.reward import progress_rewards


class ProgressRewardWarning(UserWarning):
    """The progress reward could not be computed for a batch; it used the binary reward instead."""


class BadEmbeddingInput(ValueError):
    """What made a batch's embeddings unusable, in words."""


class ProgressReward:
    """Per-trajectory SRPO rewards of a Rollouts batch (call it); srpo is the run's SRPOConfig."""

    def __init__(self, encoder: Encoder, srpo, dense_reward: bool = False):
        self.encoder, self.cfg, self.dense_reward = encoder, srpo, dense_reward
        self.expected_dim = srpo.embedding_dim or encoder.dim  # 0 in the config: the encoder's own size

    def embed(self, trajectories) -> np.ndarray:
        """[T, D] embeddings; BadEmbeddingInput naming the trajectory or the problem."""
        try:
            videos = np.stack([trajectory_video(t.frames, self.cfg.n_frames,
                                                f"trajectory {t.index} (group {t.group}, seed {t.seed})")
                               for t in trajectories])
        except NoFramesError as exc:
            raise BadEmbeddingInput(str(exc)) from exc
        h = self.encoder(videos)
        if h.ndim != 2 or h.shape != (len(trajectories), self.expected_dim):
            source = (f"--srpo.embedding_dim={self.cfg.embedding_dim}" if self.cfg.embedding_dim
                      else f"the {self.encoder.name} encoder's declared size {self.encoder.dim}")
            raise BadEmbeddingInput(f"encoder output size mismatch: the {self.encoder.name} encoder gave "
                                    f"{tuple(h.shape)} for {len(trajectories)} trajectories, expected "
                                    f"[{len(trajectories)}, {self.expected_dim}] ({source})")
        bad = ~np.isfinite(h).all(axis=1)
        if bad.any():
            names = [trajectories[i].index for i in np.flatnonzero(bad)]
            raise BadEmbeddingInput(f"NaN/Inf in the embeddings of trajectories {names}")
        return h

    def __call__(self, rollouts) -> tuple[torch.Tensor, dict]:
        """(rewards [T] float32, statistics) for the batch's trajectories."""
        start = time.perf_counter()
        trajs = rollouts.trajectories
        success = np.array([t.success for t in trajs], dtype=bool)
        tasks = [t.task for t in trajs]
        binary = torch.tensor(success, dtype=torch.float32)
        stats: dict = {"progress_fallback": 0.0}
        if not success.any():  # no reference anywhere: every task falls back, and nothing needs embedding
            stats.update(no_success_tasks=float(len(set(tasks))), success_clusters=0.0, reward_s=time.perf_counter() - start)
            return binary, stats
        try:
            embeddings = self.embed(trajs)
        except BadEmbeddingInput as exc:
            warnings.warn(f"SRPO progress reward: {exc}; this batch falls back to the binary reward",
                          ProgressRewardWarning, stacklevel=2)
            stats.update(progress_fallback=1.0, progress_fallback_reason=str(exc),
                         reward_s=time.perf_counter() - start)
            return binary, stats
        result = progress_rewards(embeddings, success, tasks, self.cfg.reward_formula, self.cfg.dbscan_eps,
                                  self.cfg.dbscan_min_samples)
        failures = result.rewards[result.graded]
        stats.update(no_success_tasks=float(len(result.no_success_tasks)),
                     success_clusters=float(sum(result.clusters.values())),
                     dbscan_clusters=float(sum(result.dbscan_clusters.values())),
                     graded_failures=float(failures.size), failure_rewards=[float(g) for g in failures])
        if failures.size:
            stats.update(failure_reward_mean=float(failures.mean()), failure_reward_min=float(failures.min()),
                         failure_reward_max=float(failures.max()), failure_reward_std=float(failures.std()))
        if self.dense_reward:
            dense = np.array([t.env_reward for t in trajs])
            referenced = np.array([task not in result.no_success_tasks for task in tasks])
            for key, rows in (("progress_spearman", result.graded), ("progress_spearman_all", referenced)):
                rho = spearman(result.rewards[rows], dense[rows])
                if rho is not None:
                    stats[key] = rho
        stats["reward_s"] = time.perf_counter() - start
        return torch.tensor(result.rewards, dtype=torch.float32), stats


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation of x and y (ties share their mean rank); None when it is undefined
    (fewer than 3 points, or either side constant)."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    return float(np.corrcoef(rx, ry)[0, 1])

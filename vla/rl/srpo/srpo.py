"""SRPO on a flow policy: GRPO whose failures are graded by a world model (docs/ALGORITHMS.md section 3).

One update, top to bottom:
1. reward per trajectory (progress.py): 1 on success; a failure earns 0.6 * sigmoid(10 * (0.5 - n)), n its
   min-max normalised latent distance to the nearest centre of its task's successes in this batch
   (reward.py); a task without a success, or a batch whose embeddings are unusable, keeps the binary reward;
2. the rest is GRPO (vla/rl/grpo.py) on these rewards: A_i = (g_i - mean_G g) / (std_G g + 1e-6) within
   each group, dynamic sampling by success rate (an all-success or all-failure group is dropped: A = 0),
   and the clipped policy-gradient epochs.
"""

from __future__ import annotations

from vla.rl.grpo import grpo_update
from vla.rl.rollout import Rollouts
from vla.rl.update import UpdateContext


def srpo_update(ctx: UpdateContext, rollouts: Rollouts, cfg) -> dict:
    """One SRPO update from a batch of grouped rollouts; cfg is an RLConfig. Returns statistics."""
    if ctx.progress_reward is None:
        raise ValueError("srpo_update needs ctx.progress_reward (vla/rl/srpo/setup.py: prepare_srpo)")
    # 1. progress reward per trajectory
    rewards, stats = ctx.progress_reward(rollouts)
    # 2. GRPO's advantages, dynamic sampling and loss on them
    return {**stats, **grpo_update(ctx, rollouts, cfg, trajectory_rewards=rewards)}

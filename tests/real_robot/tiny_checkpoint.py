"""A tiny untrained FlowVLAPolicy saved as a real checkpoint, for the end-to-end ROS tests.

Its normalisation stats make its output predictable without training: un-normalised
actions are mean + std * (network output), so a small std pins every action near
`action_mean` whatever the random weights say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_tiny_policy(directory: Path, state_dim: int, action_mean, action_std: float = 0.01, seed: int = 0) -> Path:
    tiny_policy(state_dim, action_mean, action_std, seed).save_pretrained(directory)
    return Path(directory)


def tiny_policy(state_dim: int, action_mean, action_std: float = 0.01, seed: int = 0):
    import torch

    from vla.policy.config import PolicyConfig
    from vla.policy.flow_matching_policy import ACTION_KEY, STATE_KEY
    from vla.policy.flow_vla import FlowVLAPolicy

    torch.manual_seed(seed)
    action_mean = np.asarray(action_mean, dtype=np.float32)
    config = PolicyConfig(preset="tiny", state_dim=state_dim, action_dim=len(action_mean), cameras=["agentview"],
                          vision_layers=1, depth=2, chunk_size=10, n_action_steps=5, num_inference_steps=4)
    policy = FlowVLAPolicy(config)

    def stats(mean, std):
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        return {"mean": mean, "std": std, "min": mean - 3 * std, "max": mean + 3 * std}

    policy.normalizer.load_stats({STATE_KEY: stats(np.zeros(state_dim), np.ones(state_dim)),
                                  ACTION_KEY: stats(action_mean, np.full(len(action_mean), action_std))})
    return policy.eval()

"""A gymnasium env whose action is a steering of a frozen flow policy: one step = one action chunk.

SAC (stable-baselines3) sees the actor features as observations and the steering space's [-1, 1]^dim
as actions; the wrapped simulator sees only the base policy's (steered) actions. The base policy's
own flow noise comes from a generator seeded per episode, so an episode is reproducible from its
seed and the learner's actions.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from vla.policy.observation import observations_to_batch
from vla.policy.steered.spaces import SteeringSpace

# success: 1 on the decision that reaches success, else 0. shaped: robosuite's staged dense reward.
# time: 0 on reaching success, -1 on every other decision, so Q is minus the expected decisions to
# success and failed episodes still rank states (DSRL's robomimic reward offset).
REWARDS = ("success", "shaped", "time")


class SteeringEnv(gym.Env):
    metadata: dict = {"render_modes": []}

    def __init__(self, space: SteeringSpace, env, reward: str = "success", first_seed: int = 0):
        if reward not in REWARDS:
            raise ValueError(f"reward {reward!r} is not one of {REWARDS}")
        self.space, self.env, self.reward, self.next_seed = space, env, reward, first_seed
        self.cameras = list(space.policy.config.cameras)
        with torch.no_grad():
            probe = space.actor_features(self._batch(env.reset(seed=first_seed)[0]))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (probe.shape[-1],), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (space.dim,), np.float32)
        self._obs = self._observed = None
        self._generator = torch.Generator()
        self.episode_seed = first_seed
        self.last_chunk: np.ndarray | None = None  # the executed actions of the latest step

    def _batch(self, obs) -> dict:
        return observations_to_batch([obs], self.cameras)

    def _observe(self) -> np.ndarray:
        """Encode the current observation once (the chunk reuses it); the actor's features."""
        with torch.no_grad():
            self._observed = self.space.observe(self._batch(self._obs))
        return self._observed.features[0].cpu().numpy().astype(np.float32)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is None:
            seed = self.next_seed
        self.next_seed = seed + 1
        self.episode_seed = seed
        self._generator.manual_seed(seed)
        self._obs, info = self.env.reset(seed=seed)
        self.last_chunk = None
        return self._observe(), info

    def step(self, action):
        c = self.space.policy.config
        base_noise = torch.randn(1, c.chunk_size, c.model_action_dim, generator=self._generator)
        a = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        with torch.no_grad():
            chunk = self.space.chunk(self._observed, a, base_noise)[0].cpu().numpy()
        self._obs, shaped, terminated, truncated, info = self.env.step_chunk(chunk)
        executed = chunk[: info["steps"]]
        # smoothness of the executed actions: squared differences of consecutive ones, across chunks too
        previous = executed if self.last_chunk is None else np.concatenate([self.last_chunk[-1:], executed])
        info["action_sq_diff"] = float(np.square(np.diff(previous, axis=0)).sum(-1).sum())
        info["action_diffs"] = len(previous) - 1
        self.last_chunk = executed
        success = bool(info["is_success"])
        reward = {"success": float(success), "shaped": float(shaped), "time": float(success) - 1.0}[self.reward]
        info = {**info, "is_success": success, "shaped_reward": float(shaped)}
        return self._observe(), reward, success, bool(truncated and not success), info

    def close(self):
        self.env.close()

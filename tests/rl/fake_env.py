"""A deterministic toy task behind vla.sim.VectorEnv's interface, for fast RL tests.

A point starts at a seed-dependent position; each action moves it by
0.1 * clip(action[:3]). Success (reward 1, terminated) when its x coordinate
exceeds the start by `goal`; truncated after `max_episode_steps`. The image
encodes the position, so the policy can see it. Same seed and actions, same
episode, always.
"""

from __future__ import annotations

import numpy as np

TASK = "push the point to the right"


class FakeVectorEnv:
    def __init__(self, num_envs: int, env_kwargs: dict | None = None, goal: float = 0.05,
                 max_episode_steps: int = 8, image_size: int = 16):
        kwargs = env_kwargs or {}
        self.num_envs = num_envs
        self.cameras = tuple(kwargs.get("cameras", ("agentview",)))
        self.max_steps = kwargs.get("max_episode_steps", max_episode_steps)
        self.goal, self.image_size = goal, image_size
        self.pos = np.zeros((num_envs, 3))
        self.start = np.zeros((num_envs, 3))
        self.steps = np.zeros(num_envs, dtype=int)
        self.done = np.ones(num_envs, dtype=bool)
        self.resets: list[list[int]] = []
        self.reset_options: list[list[dict] | None] = []
        self.closed = False

    def _obs(self, k: int) -> dict:
        level = np.clip((self.pos[k] + 2.0) / 4.0, 0, 1) * 255
        img = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        img[:, :] = level.astype(np.uint8)
        img[: self.image_size // 2, : self.image_size // 2] = 255 - img[: self.image_size // 2, : self.image_size // 2]
        state = np.zeros(8, dtype=np.float32)
        state[:3] = self.pos[k]
        state[3:6] = self.pos[k] - self.start[k]
        return {"images": {cam: img.copy() for cam in self.cameras}, "state": state, "task": TASK}

    def reset(self, seeds: list[int], options: list[dict] | None = None) -> list[dict]:
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        self.resets.append(list(seeds))
        self.reset_options.append(options)
        for k, s in enumerate(seeds):
            self.start[k] = np.random.default_rng(s).uniform(-1, 1, 3)
            self.pos[k] = self.start[k]
        self.steps[:] = 0
        self.done[:] = False
        return [self._obs(k) for k in range(self.num_envs)]

    def step_chunk(self, actions, record=None, active=None):
        actions = np.asarray(actions)
        active = active or [True] * self.num_envs
        record = record or [False] * self.num_envs
        outs = []
        for k in range(self.num_envs):
            if not active[k]:
                outs.append(None)
                continue
            if self.done[k]:
                raise RuntimeError(f"env {k} stepped after its episode ended")
            rewards, frames, terminated, truncated = [], [], False, False
            for a in actions[k]:
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"action contains NaN or inf: {a}")
                self.pos[k] += 0.1 * np.clip(a[:3], -1, 1)
                self.steps[k] += 1
                terminated = bool(self.pos[k, 0] - self.start[k, 0] > self.goal)
                truncated = bool(self.steps[k] >= self.max_steps)
                rewards.append(float(terminated))
                if record[k]:
                    frames.append(self._obs(k)["images"][self.cameras[0]])
                if terminated or truncated:
                    break
            self.done[k] = terminated or truncated
            info = {"is_success": terminated, "steps": len(rewards), "rewards": rewards}
            if record[k]:
                info["frames"] = frames
            outs.append((self._obs(k), float(sum(rewards)), terminated, truncated, info))
        return outs

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""Probe: does off-policy steering of a frozen state policy's initial noise (DSRL) improve it here?

The frozen flow policy maps (observation, initial noise w) to an action chunk through its
deterministic Euler sampler. SAC (stable-baselines3) learns an actor obs -> w, bounded to
[-bound, bound] per element, from the task's success reward; the base weights are never touched.
Every transition goes into a replay buffer and is reused, unlike GRPO/PPO's one-pass updates.

    python benchmarks/noise_steering_probe.py --policy P --task lift --episodes 300 --seed 0

Evaluation: the same 50 fixed initial states as `vla eval` (seeds 100000..), the base policy with
its per-episode noise against the steered policy with the actor's deterministic (mean) noise.
This is a probe for the ZPRL / noise-steering issue, not the product path (`vla rl --algo noise`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402  (benchmarks/common.py)

from vla.eval.stats import wilson_interval  # noqa: E402
from vla.policy.registry import load_policy  # noqa: E402
from vla.policy.observation import observations_to_batch  # noqa: E402
from vla.sim import make_env  # noqa: E402

EVAL_SEED, TRAIN_SEED = 100_000, 5_000_000


class NoiseSteeringEnv(gym.Env):
    """One decision = one action chunk: the agent picks the chunk's initial noise, the frozen policy
    turns it into actions, the env executes the chunk's first n_action_steps of them."""

    def __init__(self, policy, env_kwargs: dict, bound: float, first_seed: int):
        self.policy, self.bound, self.next_seed = policy, bound, first_seed
        self.env = make_env(**env_kwargs)
        c = policy.config
        self.noise_shape = (c.chunk_size, c.action_dim)
        dim = c.state_dim + c.environment_state_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (int(np.prod(self.noise_shape)),), np.float32)
        self._obs = None

    def _features(self, obs) -> np.ndarray:
        with torch.no_grad():  # the actor reads exactly what the deployed policy reads, normalised
            return self.policy.observation_vector(observations_to_batch([obs], []))[0].numpy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is None:
            seed, self.next_seed = self.next_seed, self.next_seed + 1
        self._obs, info = self.env.reset(seed=seed)
        return self._features(self._obs), info

    def chunk(self, obs, noise: np.ndarray) -> np.ndarray:
        batch = observations_to_batch([obs], [])
        with torch.no_grad():
            chunk = self.policy.predict_action_chunk(batch, noise=torch.as_tensor(noise, dtype=torch.float32)[None])
        return chunk[0, : self.policy.config.n_action_steps].numpy()

    def step(self, action):
        return self.step_noise(self.bound * np.asarray(action, dtype=np.float32).reshape(self.noise_shape))

    def step_noise(self, noise: np.ndarray):
        self._obs, reward, terminated, truncated, info = self.env.step_chunk(self.chunk(self._obs, noise))
        success = bool(info["is_success"])
        return self._features(self._obs), float(success), success, bool(truncated and not success), info


def evaluate(steer_env: NoiseSteeringEnv, episodes: int, actor=None) -> list[bool]:
    """Success per fixed evaluation state: base noise (per-episode generator, as `vla eval`), or the actor's."""
    results = []
    for i in range(episodes):
        features, _ = steer_env.reset(seed=EVAL_SEED + i)
        generator = torch.Generator().manual_seed(EVAL_SEED + i)
        done, success = False, False
        while not done:
            if actor is None:  # the base policy's own noise, unbounded, exactly as `vla eval` draws it
                noise = torch.randn(steer_env.noise_shape, generator=generator).numpy()
                features, reward, terminated, truncated, _ = steer_env.step_noise(noise)
            else:
                action, _ = actor.predict(features, deterministic=True)
                features, reward, terminated, truncated, _ = steer_env.step(action)
            success |= reward > 0
            done = terminated or truncated
        results.append(success)
    return results


def noise_diagnostic(steer_env: NoiseSteeringEnv, episodes: int) -> dict:
    """The base policy on the evaluation states with other initial-noise choices than `vla eval`'s
    Gaussian: all zeros, the Gaussian clipped to the steering bound, uniform within the bound."""
    results = {}
    for name in ("zero", "clipped", "uniform"):
        successes = []
        for i in range(episodes):
            steer_env.reset(seed=EVAL_SEED + i)
            generator, rng = torch.Generator().manual_seed(EVAL_SEED + i), np.random.default_rng(EVAL_SEED + i)
            done = success = False
            while not done:
                noise = torch.randn(steer_env.noise_shape, generator=generator).numpy()
                if name == "zero":
                    noise = np.zeros_like(noise)
                elif name == "clipped":
                    noise = np.clip(noise, -steer_env.bound, steer_env.bound)
                else:
                    noise = rng.uniform(-steer_env.bound, steer_env.bound, steer_env.noise_shape).astype(np.float32)
                _, reward, terminated, truncated, _ = steer_env.step_noise(noise)
                success |= reward > 0
                done = terminated or truncated
            successes.append(bool(success))
        results[name] = summary(successes)
        print(f"base policy, {name} noise: {results[name]}", flush=True)
    return results


def summary(successes: list[bool]) -> dict:
    k, n = sum(successes), len(successes)
    lo, hi = wilson_interval(k, n)
    return {"pc_success": 100.0 * k / n, "ci95": [100.0 * lo, 100.0 * hi], "n": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, help="a state_flow checkpoint")
    p.add_argument("--task", default="lift")
    p.add_argument("--max-episode-steps", type=int, default=200)
    p.add_argument("--episodes", type=int, default=300, help="training episodes (SAC's budget)")
    p.add_argument("--bound", type=float, default=1.5, help="noise magnitude per element")
    p.add_argument("--utd", type=int, default=2, help="gradient steps per decision")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--noise-diagnostic", action="store_true",
                   help="only evaluate the base policy with zero / clipped / uniform noise, then stop")
    a = p.parse_args()
    from stable_baselines3 import SAC

    torch.set_num_threads(1)
    policy = load_policy(a.policy).eval().requires_grad_(False)
    env_kwargs = {"task": a.task, "cameras": (), "max_episode_steps": a.max_episode_steps}
    train_env = NoiseSteeringEnv(policy, env_kwargs, a.bound, TRAIN_SEED + 100_000 * a.seed)
    eval_env = NoiseSteeringEnv(policy, env_kwargs, a.bound, 0)
    if a.noise_diagnostic:
        results = noise_diagnostic(eval_env, a.eval_episodes)
        write_json(a.json or RESULTS / f"noise_steering_{a.task}_noise_diagnostic.json", a, **results)
        return
    decisions_per_episode = -(-a.max_episode_steps // policy.config.n_action_steps)
    start = time.time()
    base = evaluate(eval_env, a.eval_episodes)
    print(f"base policy: {summary(base)}", flush=True)
    agent = SAC("MlpPolicy", train_env, learning_rate=3e-4, buffer_size=200_000, batch_size=256, gamma=0.99,
                learning_starts=10 * decisions_per_episode, train_freq=1, gradient_steps=a.utd, seed=a.seed,
                policy_kwargs={"net_arch": [256, 256]}, verbose=0, device="cpu")
    episodes_done, curve = 0, []

    def log_episode(locals_, _globals) -> bool:
        nonlocal episodes_done
        for done, info in zip(locals_["dones"], locals_["infos"]):
            if done:
                episodes_done += 1
                curve.append(bool(info.get("is_success", False)))
        return episodes_done < a.episodes

    agent.learn(total_timesteps=a.episodes * decisions_per_episode, callback=log_episode)
    train_s = time.time() - start
    steered = evaluate(eval_env, a.eval_episodes, agent)
    result = {"base": summary(base), "steered": summary(steered), "train_episodes": episodes_done,
              "train_success_by_50": [float(np.mean(curve[i:i + 50])) for i in range(0, len(curve), 50)],
              "both_states": sum(b and s for b, s in zip(base, steered)),
              "gained_states": sum(s and not b for b, s in zip(base, steered)),
              "lost_states": sum(b and not s for b, s in zip(base, steered)), "wall_s": time.time() - start,
              "train_s": train_s}
    print(json.dumps(result, indent=1))
    write_json(a.json or RESULTS / f"noise_steering_{a.task}_seed{a.seed}.json", a, **result)


if __name__ == "__main__":
    main()

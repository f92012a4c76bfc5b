"""Can the steering learner (stable-baselines3 SAC as `vla rl --algo noise` configures it) learn a
trivial problem from as few decisions as a steering run gives it?

A contextual bandit in disguise: 18-dim Gaussian states, a 28-dim action (DSRL's noise size for a
chunk of 4), reward -mean((a - tanh(s W))^2), a fresh random state every step, 25 steps per episode.
The best action is a smooth function of the state, and the future does not depend on the action, so
any action signal the critic finds is the reward's. Reported: the deterministic actor's squared
error on 200 held-out states against the zero action's.

    python benchmarks/sac_bandit_sanity.py --decisions 3000 --gamma 0.99 --init-log-std 0
    python benchmarks/sac_bandit_sanity.py --decisions 3000 --gamma 0.0
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from vla.rl.steering.sac import steering_sac_class

STATE_DIM, ACTION_DIM, HORIZON = 18, 28, 25


class BanditEnv(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def __init__(self, weights: np.ndarray):
        self.weights, self.rng = weights, np.random.default_rng(0)

    def best_action(self, s: np.ndarray) -> np.ndarray:
        return np.tanh(s @ self.weights)

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.s, self.t = self.rng.normal(size=STATE_DIM).astype(np.float32), 0
        return self.s, {}

    def step(self, a):
        reward = -float(np.mean((a - self.best_action(self.s)) ** 2))
        self.t += 1
        self.s = self.rng.normal(size=STATE_DIM).astype(np.float32)
        return self.s, reward, False, self.t >= HORIZON, {}


class Unsteered:
    def warmup_action(self, rng):
        return np.zeros(ACTION_DIM, np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decisions", type=int, default=3000)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--init-log-std", type=float, default=0.0)
    p.add_argument("--target-entropy", type=float, default=0.0, help="per action dim")
    p.add_argument("--utd", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    weights = np.random.default_rng(0).normal(size=(STATE_DIM, ACTION_DIM)) / np.sqrt(STATE_DIM) * 0.5
    env = BanditEnv(weights)
    agent = steering_sac_class()(
        "MlpPolicy", env, learning_starts=250, gradient_steps=a.utd, batch_size=256, gamma=a.gamma,
        ent_coef="auto_0.01", target_entropy=a.target_entropy * ACTION_DIM, policy_kwargs={"net_arch": [256, 256]},
        seed=0, device="cpu", verbose=0)
    agent.space, agent.warmup_rng = Unsteered(), np.random.default_rng(0)
    with torch.no_grad():
        agent.actor.log_std.weight.zero_()
        agent.actor.log_std.bias.fill_(a.init_log_std)
    start = time.time()
    agent.learn(a.decisions)
    states = np.random.default_rng(10_000).normal(size=(200, STATE_DIM)).astype(np.float32)
    best = env.best_action(states)
    learned = agent.predict(states, deterministic=True)[0]
    print(f"gamma {a.gamma}, init log-std {a.init_log_std}, {a.decisions} decisions ({time.time() - start:.0f} s): "
          f"actor squared error {np.mean((learned - best) ** 2):.3f}, zero action {np.mean(best ** 2):.3f}")


if __name__ == "__main__":
    main()

"""stable-baselines3's SAC with the two things steering needs and SB3 does not express.

1. Warm-up plays the base policy unsteered (the space's warmup_action), not uniform random actions.
2. With `target_subset` > 0, the critic target takes the minimum over that many critics drawn at
   random per gradient step from the ensemble (REDQ; ZPRL uses 10 critics and pairs), and the actor
   maximises the ensemble's mean Q; SB3's own update takes the minimum over all critics for both.
   `entropy_in_target` False leaves the entropy bonus out of the target, as ZPRL's released code does
   (with or without a subset).
Everything else (buffers, networks, entropy tuning, target updates) is SB3's.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from vla.config import ConfigError


def steering_sac_class():
    try:
        from stable_baselines3 import SAC
        from stable_baselines3.common.utils import polyak_update
    except ImportError as exc:
        raise ConfigError("--algo noise|residual|zprl needs stable-baselines3: pip install -e '.[offpolicy]'") from exc

    class SteeringSAC(SAC):
        space = None  # the SteeringSpace, for warm-up actions
        warmup_rng: np.random.Generator
        target_subset = 0
        entropy_in_target = True

        # Called before every decision: the trainer checkpoints (or stops) here, between two decisions, once
        # the previous step's transition is stored and trained on.
        before_decision = None

        def _sample_action(self, learning_starts, action_noise=None, n_envs=1):
            if self.before_decision is not None:
                self.before_decision()
            if self.num_timesteps < learning_starts:
                action = np.stack([self.space.warmup_action(self.warmup_rng) for _ in range(n_envs)])
                return action, action
            return super()._sample_action(learning_starts, action_noise, n_envs)

        update_seconds = 0.0  # wall time in gradient steps, for the update-time-per-env-step figure

        def train(self, gradient_steps: int, batch_size: int = 64) -> None:
            start = time.perf_counter()
            try:
                self._train(gradient_steps, batch_size)
            finally:
                self.update_seconds += time.perf_counter() - start

        def _train(self, gradient_steps: int, batch_size: int) -> None:
            if not self.target_subset and self.entropy_in_target:
                return super().train(gradient_steps, batch_size)
            assert self.n_steps == 1, "the ensemble update bootstraps one step"
            self.policy.set_training_mode(True)
            self._update_learning_rate([self.actor.optimizer, self.critic.optimizer, self.ent_coef_optimizer])
            losses = {"actor_loss": [], "critic_loss": [], "ent_coef": [], "ent_coef_loss": []}
            for _ in range(gradient_steps):
                self._n_updates += 1
                data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
                actions_pi, log_prob = self.actor.action_log_prob(data.observations)
                log_prob = log_prob.reshape(-1, 1)
                # entropy coefficient, auto-tuned toward the target entropy
                ent_coef = torch.exp(self.log_ent_coef.detach())
                ent_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
                self.ent_coef_optimizer.zero_grad()
                ent_loss.backward()
                self.ent_coef_optimizer.step()
                # critics: TD target from the minimum over a random subset of target critics
                with torch.no_grad():
                    next_actions, next_log_prob = self.actor.action_log_prob(data.next_observations)
                    next_q = torch.cat(self.critic_target(data.next_observations, next_actions), dim=1)
                    if self.target_subset:
                        next_q = next_q[:, torch.randperm(next_q.shape[1])[: self.target_subset]]
                    next_q = next_q.min(dim=1, keepdim=True).values
                    if self.entropy_in_target:
                        next_q = next_q - ent_coef * next_log_prob.reshape(-1, 1)
                    target = data.rewards + (1 - data.dones) * self.gamma * next_q
                current = self.critic(data.observations, data.actions)
                critic_loss = 0.5 * sum(F.mse_loss(q, target) for q in current)
                self.critic.optimizer.zero_grad()
                critic_loss.backward()
                self.critic.optimizer.step()
                # actor: the ensemble's mean Q with a random-subset target (REDQ), else SB3's minimum
                q_pi = torch.cat(self.critic(data.observations, actions_pi), dim=1)
                q_pi = q_pi.mean(dim=1, keepdim=True) if self.target_subset else q_pi.min(dim=1, keepdim=True).values
                actor_loss = (ent_coef * log_prob - q_pi).mean()
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
                self.actor.optimizer.step()
                if self._n_updates % self.target_update_interval == 0:
                    polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                    polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
                losses["actor_loss"].append(actor_loss.item())
                losses["critic_loss"].append(critic_loss.item())
                losses["ent_coef"].append(ent_coef.item())
                losses["ent_coef_loss"].append(ent_loss.item())
            for key, values in losses.items():
                self.logger.record(f"train/{key}", float(np.mean(values)))

    return SteeringSAC

"""The steering actor a deployed steered policy runs: the mean of SAC's squashed Gaussian, tanh(mu(x)).

Its layers mirror stable-baselines3's SAC actor (an MLP `latent_pi` with ReLU, then the `mu` layer),
so a trained actor's weights copy over by name and the checkpoint needs neither SB3 nor a pickle.
"""

from __future__ import annotations

import torch
from torch import nn


class SteeringActor(nn.Module):
    def __init__(self, feature_dim: int, action_dim: int, hidden: list[int]):
        super().__init__()
        self.feature_dim, self.action_dim, self.hidden = feature_dim, action_dim, list(hidden)
        layers: list[nn.Module] = []
        for n_in, n_out in zip([feature_dim] + self.hidden[:-1], self.hidden):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(self.hidden[-1] if self.hidden else feature_dim, action_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The deterministic steering a in (-1, 1)^action_dim."""
        return torch.tanh(self.mu(self.latent_pi(features)))

    @classmethod
    def from_sb3(cls, sb3_actor) -> "SteeringActor":
        """A copy of a stable-baselines3 SAC actor (flattened observations, no feature extractor layers)."""
        hidden = [m.out_features for m in sb3_actor.latent_pi if isinstance(m, nn.Linear)]
        actor = cls(sb3_actor.mu.in_features if not hidden else sb3_actor.latent_pi[0].in_features,
                    sb3_actor.mu.out_features, hidden)
        state = {k: v for k, v in sb3_actor.state_dict().items() if k.startswith(("latent_pi.", "mu."))}
        actor.load_state_dict(state)
        return actor

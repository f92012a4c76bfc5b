import torch

from vla.policy.config import PolicyConfig
from vla.policy.flow_vla import FlowVLAPolicy


def tiny_config(**overrides) -> PolicyConfig:
    base = dict(preset="tiny", vision_layers=1, depth=2, chunk_size=4, n_action_steps=2, num_inference_steps=3)
    base.update(overrides)
    return PolicyConfig(**base)


def unit_stats(state_dim=8, action_dim=7) -> dict:
    def s(d):
        return {"mean": torch.zeros(d), "std": torch.ones(d), "min": -torch.ones(d), "max": torch.ones(d)}

    return {"observation.state": s(state_dim), "action": s(action_dim)}


def make_policy(seed=0, **overrides) -> FlowVLAPolicy:
    torch.manual_seed(seed)
    policy = FlowVLAPolicy(tiny_config(**overrides))
    policy.normalizer.load_stats(unit_stats(policy.config.state_dim, policy.config.action_dim))
    return policy


def make_batch(b=3, chunk=4, tasks=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "observation.images.agentview": torch.randint(0, 256, (b, 64, 64, 3), dtype=torch.uint8, generator=g),
        "observation.state": torch.randn(b, 8, generator=g),
        "task": tasks or ["lift the red cube"] * b,
        "action": torch.randn(b, chunk, 7, generator=g),
        "action_is_pad": torch.zeros(b, chunk, dtype=torch.bool),
    }

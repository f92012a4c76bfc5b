import torch

from vla.policy.config import PolicyConfig
from vla.policy.flow_vla import FlowVLAPolicy
from vla.policy.state_flow import StateFlowPolicy


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


ENV_STATE_DIM = 10  # Lift's object state


def make_state_policy(seed=0, backbone="mlp", **overrides) -> StateFlowPolicy:
    """A small state_flow policy with unit statistics (robot state 8, object state 10, actions 7)."""
    torch.manual_seed(seed)
    base = dict(type="state_flow", backbone=backbone, hidden_dim=32, num_blocks=2, chunk_size=4, n_action_steps=2,
                num_inference_steps=3, environment_state_dim=ENV_STATE_DIM)
    base.update(overrides)
    policy = StateFlowPolicy(PolicyConfig(**base))
    stats = unit_stats(8, 7)
    stats["observation.environment_state"] = unit_stats(ENV_STATE_DIM, 1)["observation.state"]
    policy.normalizer.load_stats(stats)
    return policy


def make_batch(b=3, chunk=4, tasks=None, seed=0):
    """Everything either policy type reads: a camera image, robot and object state, an instruction."""
    g = torch.Generator().manual_seed(seed)
    return {
        "observation.images.agentview": torch.randint(0, 256, (b, 64, 64, 3), dtype=torch.uint8, generator=g),
        "observation.state": torch.randn(b, 8, generator=g),
        "observation.environment_state": torch.randn(b, ENV_STATE_DIM, generator=g),
        "task": tasks or ["lift the red cube"] * b,
        "action": torch.randn(b, chunk, 7, generator=g),
        "action_is_pad": torch.zeros(b, chunk, dtype=torch.bool),
    }


def bottleneck_gradients(policy, batch, noise, time):
    """(gradients of the policy's loss with its bottleneck, gradients of the plain flow-matching loss of the
    same network, noise and time, the bottleneck loss's info, the plain loss): what ZPRL's terms add."""

    def grads(loss):
        policy.zero_grad(set_to_none=True)
        loss.backward()
        return {n: (p.grad.clone() if p.grad is not None else None) for n, p in policy.named_parameters()}

    full_loss, info = policy(batch, noise=noise, time=time)
    full = grads(full_loss)
    vib = policy.vib
    policy.vib = None
    try:
        flow_loss, _ = policy(batch, noise=noise, time=time)
    finally:
        policy.vib = vib
    return full, grads(flow_loss), info, flow_loss.item()

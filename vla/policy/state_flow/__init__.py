"""The state-based flow-matching policy (`--policy.type=state_flow`)."""

from vla.policy.state_flow.policy import STATE_FLOW_TYPE, StateCondition, StateFlowPolicy, latent_target_offsets

__all__ = ["STATE_FLOW_TYPE", "StateCondition", "StateFlowPolicy", "latent_target_offsets"]

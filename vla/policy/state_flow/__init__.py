"""The state-based flow-matching policy (`--policy.type=state_flow`)."""

from vla.policy.state_flow.policy import STATE_FLOW_TYPE, StateCondition, StateFlowPolicy

__all__ = ["STATE_FLOW_TYPE", "StateCondition", "StateFlowPolicy"]

"""The flow-matching VLA (`--policy.type=flow_vla`): pi0 / pi0.5's structure (policy.py), its two-stream
transformer (transformer.py) and prompt encoders (language.py: frozen MiniLM; token_prompt.py: a
checkpoint's own token table). SmolVLA (vla/policy/smolvla/) builds on these pieces."""

from vla.policy.flow_vla.policy import FLOW_VLA_TYPE, FlowVLAPolicy

__all__ = ["FLOW_VLA_TYPE", "FlowVLAPolicy"]

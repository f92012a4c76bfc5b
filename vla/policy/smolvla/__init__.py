"""SmolVLA (Hugging Face's flow-matching VLA) as a policy of this project: policy.py, its config
(config.py) and interleaved transformer (transformer.py). Built from lerobot checkpoints only
(vla/policy/foreign/smolvla_load.py); it borrows the VLA's pieces (vla/policy/flow_vla/)."""

from vla.policy.smolvla.config import SMOLVLA_TYPE, SmolVLAConfig
from vla.policy.smolvla.policy import SmolVLAPolicy

__all__ = ["SMOLVLA_TYPE", "SmolVLAConfig", "SmolVLAPolicy"]

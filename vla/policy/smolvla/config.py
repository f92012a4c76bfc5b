"""SmolVLAPolicy's configuration: PolicyConfig's fields plus what SmolVLA's structure adds.

A subclass, so everything that reads a policy config (RL heads read width / expert_width, eval
reads cameras / n_action_steps, fine-tuning reads the freeze / dtype options) works unchanged.
There is no preset: a SmolVLA config always comes from a checkpoint, every size given.
"""

from __future__ import annotations

from dataclasses import dataclass

from vla.policy.config import PolicyConfig

SMOLVLA_TYPE = "flow_vla_smolvla"  # config.json type of a SmolVLA policy saved by this project (vla/policy/registry.py)


@dataclass
class SmolVLAConfig(PolicyConfig):
    preset: str = "smolvla"
    # Pixel-shuffle factor of the connector (vision tokens per image = patches / factor**2).
    scale_factor: int = 4
    # Expert layer i is self-attention when i % n == 0, else cross-attention (1: all self-attention).
    self_attn_every_n_layers: int = 2
    # Epsilon of the RMSNorms in the prefix and expert streams (SmolLM2's).
    rms_norm_eps: float = 1e-5
    # Epsilon of the vision tower's layer norms (SmolVLM's).
    vision_eps: float = 1e-6
    # Shortest period of the sinusoidal flow-time embedding.
    time_min_period: float = 4e-3
    # Longest period of the sinusoidal flow-time embedding.
    time_max_period: float = 4.0
    # The Hub backbone lerobot builds this model's VLM from and loads its tokenizer from (config.json's
    # vlm_model_name); read from a lerobot checkpoint, written back by `vla export --format lerobot`.
    vlm_model_name: str = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        super().validate()
        sides = self.image_size // self.patch_size
        if sides % self.scale_factor:
            raise ValueError(f"{sides}x{sides} patches do not pixel-shuffle by scale_factor {self.scale_factor}")
        if self.prompt_format != "pi0" or self.language != "tokens" or self.time_conditioning != "mlp":
            raise ValueError("a SmolVLA config embeds a newline-terminated prompt with its own token table "
                             "(language 'tokens', prompt_format 'pi0') and conditions on time through an MLP")

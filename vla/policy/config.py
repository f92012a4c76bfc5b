"""Policy configuration: named sizes (presets) plus explicit overrides.

A config names a preset ("tiny", "pi0", "pi05"); any field left at None is
filled from that preset when the dataclass is built, so a YAML file or a
dotted override only has to say what differs. The resolved config (every
field filled) is what checkpoints and run directories record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

TIME_CONDITIONING = ("mlp", "adarms")

# pi0's module shapes: SigLIP So400m/14 at 224 px, a Gemma-2B prefix stream and
# a Gemma-300M action expert sharing attention (8 query heads, 1 KV head,
# head_dim 256). Keeping these shapes lets published checkpoints load through
# a name mapping (see docs/POLICY.md).
_PI0 = dict(
    image_size=224, patch_size=14, vision_width=1152, vision_layers=27, vision_heads=16,
    vision_mlp_dim=4304, width=2048, mlp_dim=16384, depth=18, num_heads=8, num_kv_heads=1,
    head_dim=256, expert_width=1024, expert_mlp_dim=4096, chunk_size=50, n_action_steps=50,
    num_inference_steps=10, time_conditioning="mlp",
)

PRESETS: dict[str, dict] = {
    # Small enough to train from scratch on a 2-core CPU in a few minutes.
    "tiny": dict(
        image_size=64, patch_size=16, vision_width=128, vision_layers=2, vision_heads=4,
        vision_mlp_dim=256, width=128, mlp_dim=256, depth=4, num_heads=4, num_kv_heads=1,
        head_dim=32, expert_width=128, expert_mlp_dim=256, chunk_size=16, n_action_steps=8,
        num_inference_steps=10, time_conditioning="adarms",
    ),
    # A GPU-sized middle ground for LIBERO-scale data.
    "small": dict(
        image_size=128, patch_size=16, vision_width=384, vision_layers=6, vision_heads=6,
        vision_mlp_dim=1536, width=512, mlp_dim=2048, depth=8, num_heads=8, num_kv_heads=1,
        head_dim=64, expert_width=384, expert_mlp_dim=1536, chunk_size=16, n_action_steps=8,
        num_inference_steps=10, time_conditioning="adarms",
    ),
    "pi0": _PI0,
    # pi0.5 injects the flow time through adaptive RMSNorm in the expert.
    "pi05": {**_PI0, "time_conditioning": "adarms"},
}


@dataclass
class PolicyConfig:
    preset: str = "tiny"
    # Set from the dataset at training time (state and action dimensions and
    # camera names are properties of the data, not of the model size).
    state_dim: int = 8
    action_dim: int = 7
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    # Architecture; None means "take it from the preset".
    image_size: int | None = None
    patch_size: int | None = None
    vision_width: int | None = None
    vision_layers: int | None = None
    vision_heads: int | None = None
    vision_mlp_dim: int | None = None
    width: int | None = None
    mlp_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    expert_width: int | None = None
    expert_mlp_dim: int | None = None
    time_conditioning: str | None = None
    # Action chunking and sampling.
    chunk_size: int | None = None
    n_action_steps: int | None = None
    num_inference_steps: int | None = None
    # Flow-matching time distribution: t = Beta(a, b) * scale + offset.
    time_beta_alpha: float = 1.5
    time_beta_beta: float = 1.0
    time_scale: float = 0.999
    time_offset: float = 0.001
    max_language_tokens: int = 32
    # "mean_std" or "min_max" for state and action (images use SigLIP's [-1, 1]).
    normalization: str = "mean_std"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"policy.preset: unknown preset {self.preset!r}; valid presets: {sorted(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        if self.time_conditioning not in TIME_CONDITIONING:
            raise ValueError(f"policy.time_conditioning: {self.time_conditioning!r} is not one of {TIME_CONDITIONING}")
        if self.normalization not in ("mean_std", "min_max"):
            raise ValueError(f"policy.normalization: {self.normalization!r} is not 'mean_std' or 'min_max'")
        if self.image_size % self.patch_size:
            raise ValueError(f"policy.image_size {self.image_size} is not a multiple of policy.patch_size {self.patch_size}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"policy.num_heads {self.num_heads} is not a multiple of policy.num_kv_heads {self.num_kv_heads}")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f"policy.n_action_steps {self.n_action_steps} must be in [1, chunk_size={self.chunk_size}]")
        if not self.cameras:
            raise ValueError("policy.cameras is empty: the policy needs at least one camera")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown policy config keys {unknown}")
        return cls(**data)

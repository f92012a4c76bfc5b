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
LANGUAGE_MODES = ("minilm", "tokens")
PROMPT_FORMATS = ("plain", "pi0", "pi05")
IMAGE_RESIZE = ("stretch", "pad")
DTYPES = ("float32", "bfloat16")

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


POLICY_TYPES = ("flow_vla", "state_flow")


@dataclass
class PolicyConfig:
    # Policy type: "flow_vla" (images + instruction + robot state, the VLA) or "state_flow" (robot state
    # plus the task's object state, no images; its fields are backbone, hidden_dim and num_blocks).
    type: str = "flow_vla"
    # Named model size (tiny, small, pi0, pi05); the fields below left at None take its values.
    preset: str = "tiny"
    # Robot state size; `vla train` sets it from the dataset. State and action sizes and camera
    # names are properties of the data, not of the model size.
    state_dim: int = 8
    # Action size; `vla train` sets it from the dataset.
    action_dim: int = 7
    # Cameras the policy reads, in order; each must be in the dataset (train) and the env (eval).
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    # Orientation of the training images, "rot180" (LIBERO's published one) or "upright" (sim/render.py);
    # `vla train` takes it from the dataset (set it for a dataset that does not record one); "" = unknown.
    image_convention: str = ""
    # LIBERO tasks ("suite/index") whose evaluation initial states started training demos; `vla train` takes
    # them from the dataset, and `vla eval` warns when it evaluates on them (None = not recorded).
    train_eval_init_states: list[str] | None = None
    # Side in pixels of the square images the vision tower sees (camera images are resized to it).
    # This and the architecture fields below default to None: "take it from the preset".
    image_size: int | None = None
    # Vision tower patch side in pixels (image_size must be a multiple of it).
    patch_size: int | None = None
    # Vision tower (SigLIP) hidden width.
    vision_width: int | None = None
    # Vision tower transformer layers.
    vision_layers: int | None = None
    # Vision tower attention heads.
    vision_heads: int | None = None
    # Vision tower MLP hidden width.
    vision_mlp_dim: int | None = None
    # Prefix (VLM: images + language) stream hidden width.
    width: int | None = None
    # Prefix stream MLP hidden width.
    mlp_dim: int | None = None
    # Transformer layers, in each of the prefix and action-expert streams.
    depth: int | None = None
    # Attention query heads (both streams).
    num_heads: int | None = None
    # Key/value heads for grouped-query attention (must divide num_heads).
    num_kv_heads: int | None = None
    # Width of each attention head.
    head_dim: int | None = None
    # Action-expert stream hidden width.
    expert_width: int | None = None
    # Action-expert MLP hidden width.
    expert_mlp_dim: int | None = None
    # How the flow time enters the expert: "mlp" (fused with the action tokens, pi0) or "adarms"
    # (adaptive RMSNorm, pi0.5).
    time_conditioning: str | None = None
    # Actions predicted per chunk (the action horizon).
    chunk_size: int | None = None
    # Actions of each chunk executed before the next prediction (1 to chunk_size).
    n_action_steps: int | None = None
    # Euler denoising steps when sampling an action chunk.
    num_inference_steps: int | None = None
    # Alpha of the training flow-time distribution t = Beta(alpha, beta) * time_scale + time_offset.
    time_beta_alpha: float = 1.5
    # Beta of the training flow-time distribution (see time_beta_alpha).
    time_beta_beta: float = 1.0
    # Scale of the training flow time (see time_beta_alpha).
    time_scale: float = 0.999
    # Offset of the training flow time, keeping t above 0 (see time_beta_alpha).
    time_offset: float = 0.001
    # Instruction tokens kept (longer prompts are truncated).
    max_language_tokens: int = 32
    # "mean_std" or "min_max" for state and action (images use SigLIP's [-1, 1]).
    normalization: str = "mean_std"
    # Added to the std (or max - min) when normalising state and action.
    normalization_eps: float = 1e-6
    # Instruction encoder: "minilm" (frozen sentence encoder + language_proj) or "tokens".
    # With "tokens" it is the checkpoint's own token embedding (PaliGemma's for pi0 / pi0.5) with the
    # tokenizer in tokenizer_path (a local directory). This and the fields below up to image_feature_scale
    # are for published-checkpoint compatibility (docs/PRETRAINED.md); the defaults are our own policy's.
    language: str = "minilm"
    # Rows of the token embedding table for language="tokens" (0 with "minilm").
    vocab_size: int = 0
    # Local tokenizer directory for language="tokens".
    tokenizer_path: str = ""
    # "plain": the instruction as given; "pi0": newline-terminated; "pi05": task plus the
    # discretised state ("Task: ..., State: ...;\nAction: "), and no state token in the suffix.
    prompt_format: str = "plain"
    # With prompt_format "pi0": strip the task and turn "_" and newlines into spaces before the final
    # newline, as openpi's PaligemmaTokenizer does (lerobot's pi0 does not; openpi checkpoints load with it).
    prompt_clean: bool = False
    # With prompt_format "pi05": discretise only the robot's state_dim values into the prompt, as openpi
    # does (it tokenizes before padding); False pads them to max_state_dim first, as lerobot does.
    prompt_state_unpadded: bool = False
    # Model-side state width (pi0 pads it to 32); 0 = state_dim.
    max_state_dim: int = 0
    # Model-side action width (pi0 pads it to 32); 0 = action_dim.
    max_action_dim: int = 0
    # How images are fit to image_size: "stretch" (plain resize) or "pad" (keep the aspect ratio; pi0's).
    # Padding fills with image_pad_value (flow_vla/policy.py, resize_with_pad).
    image_resize: str = "stretch"
    # Pad value for image_resize="pad", in SigLIP's [-1, 1] input range (-1 = black; see
    # flow_vla/policy.py, resize_with_pad).
    image_pad_value: float = -1.0
    # Divide projected image tokens by sqrt(width) before the prefix stream, as stock transformers'
    # PaliGemma does. openpi's pi0 / pi0.5 (and lerobot's, on the transformers fork it requires) do not,
    # so published checkpoints load with False; True only reproduces checkpoints saved with it.
    image_feature_scale: bool = False
    # Checkpoint to fine-tune from (ours, lerobot pi0 / pi0.5, or openpi's PyTorch layout); "" = from scratch.
    # Its architecture replaces the fields above. This and the fields below are the fine-tuning options
    # (vla/policy/finetune.py), memory-aware for 3B checkpoints.
    init: str = ""
    # Freeze the vision tower's weights.
    freeze_vision: bool = False
    # Freeze the whole VLM (vision, projector, prefix stream, embedding): only the action expert trains.
    train_expert_only: bool = False
    # Recompute each transformer block in the backward pass instead of storing its activations (less memory).
    gradient_checkpointing: bool = False
    # Weight dtype for training, "float32" or "bfloat16" (norm weights stay float32).
    dtype: str = "float32"
    # Rank of LoRA adapters on the prefix stream's projections (0 = none; needs peft; rest of VLM frozen).
    lora_rank: int = 0
    # LoRA scaling numerator: adapter updates are scaled by lora_alpha / lora_rank.
    lora_alpha: float = 16.0

    # state_flow: velocity network, "mlp" (residual MLP, DPPO's) or "unet" (1-D temporal U-Net, diffusion policy's).
    backbone: str = "mlp"
    # state_flow: width of the observation encoder and of the velocity network.
    hidden_dim: int = 256
    # state_flow: residual blocks of the MLP backbone.
    num_blocks: int = 3
    # state_flow: size of the task's object state; `vla train` sets it from the dataset (0 = robot state only).
    environment_state_dim: int = 0
    # Latent size of a variational information bottleneck, which `vla rl --algo zprl` steers (0 = none; ZPRL's
    # released code uses 16, 32 for harder tasks). state_flow: on the observation embedding, which the velocity
    # network then reads only through it. flow_vla: on the pooled prefix, decoded into one extra prefix token
    # the action expert attends to (docs/DECISIONS.md).
    vib_dim: int = 0
    # Weight of the bottleneck's KL to N(0, I) in the training loss.
    vib_beta: float = 2e-4
    # Weight of the bottleneck's reconstruction of the (detached) observation embedding or pooled prefix.
    vib_gamma: float = 0.01
    # Think before acting (LAPO, docs/ALGORITHMS.md section 5): after the observation, latent tokens, each fed
    # back as the next input (state_flow: a GRU cell; flow_vla: the prefix stream), with an end decision after
    # each group; the actions read the observation plus the chosen latents. `vla rl --algo lapo` needs it.
    latent_reasoning: bool = False
    # Latent reasoning: the candidate lengths, increasing multiples of latent_group (the end decisions sit there).
    latent_lengths: list[int] = field(default_factory=lambda: [2, 4, 6, 8])
    # Latent reasoning: latents per group; an end decision follows each group.
    latent_group: int = 2
    # Latent reasoning: temperature of the length distribution p_m = softmax(l_m / beta) over the end logits.
    latent_beta: float = 1.0
    # Latent reasoning: at evaluation the first length whose probability reaches this, else the most likely.
    latent_eval_threshold: float = 0.99
    # Latent reasoning warm-up: latent i regresses the encoding of the observation i * latent_stride frames ahead.
    latent_stride: int = 2
    # Latent reasoning warm-up: weight of the latents' cosine loss to their future-observation targets.
    latent_loss_weight: float = 1.0
    # Latent reasoning warm-up: weight of the cross-entropy of the length distribution to the sampled length.
    latent_end_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise ValueError(f"policy.type: unknown policy type {self.type!r}; valid types: {', '.join(POLICY_TYPES)}")
        if self.type == "state_flow":
            self.cameras = []  # it reads no images
        if self.latent_reasoning:
            validate_latent_reasoning(self)
        if self.image_convention not in ("", "rot180", "upright"):
            raise ValueError(f"policy.image_convention: unknown {self.image_convention!r}; valid: rot180, upright "
                             "(or empty: unknown)")
        if self.preset not in PRESETS:
            raise ValueError(f"policy.preset: unknown preset {self.preset!r}; valid presets: {sorted(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        validate_bottleneck(self)
        if self.type == "state_flow":  # the VLA's architecture fields do not apply (state_flow/policy.py checks)
            return
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
        for name, value, valid in (("language", self.language, LANGUAGE_MODES),
                                   ("prompt_format", self.prompt_format, PROMPT_FORMATS),
                                   ("image_resize", self.image_resize, IMAGE_RESIZE), ("dtype", self.dtype, DTYPES)):
            if value not in valid:
                raise ValueError(f"policy.{name}: {value!r} is not one of {valid}")
        if self.language == "tokens" and self.vocab_size <= 0:
            raise ValueError("policy.language 'tokens' needs policy.vocab_size > 0")
        if self.prompt_format == "pi05" and self.language != "tokens":
            raise ValueError("policy.prompt_format 'pi05' writes the state into the prompt: it needs policy.language 'tokens'")
        if self.max_state_dim and self.max_state_dim < self.state_dim:
            raise ValueError(f"policy.max_state_dim {self.max_state_dim} < state_dim {self.state_dim}")
        if self.max_action_dim and self.max_action_dim < self.action_dim:
            raise ValueError(f"policy.max_action_dim {self.max_action_dim} < action_dim {self.action_dim}")

    @property
    def model_state_dim(self) -> int:
        return self.max_state_dim or self.state_dim

    @property
    def model_action_dim(self) -> int:
        return self.max_action_dim or self.action_dim

    @property
    def state_token(self) -> bool:
        """pi0.5 reads the state from the prompt; everything else has a state token in the suffix."""
        return self.prompt_format != "pi05"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown policy config keys {unknown}")
        return cls(**data)


def validate_bottleneck(c: PolicyConfig) -> None:
    """Refuse bottleneck settings no policy can build (when the config is parsed)."""
    if c.vib_dim < 0 or c.vib_beta < 0 or c.vib_gamma < 0:
        raise ValueError(f"policy.vib_dim, vib_beta and vib_gamma must be >= 0, got {c.vib_dim}, {c.vib_beta}, "
                         f"{c.vib_gamma}")
    if c.vib_dim and c.type not in ("state_flow", "flow_vla"):
        raise ValueError(f"policy.vib_dim: the bottleneck is built for the state_flow and flow_vla policies, not {c.type!r}")
    if c.latent_reasoning and c.vib_dim:
        raise ValueError("policy.latent_reasoning with policy.vib_dim > 0: a policy either thinks (LAPO) or has a "
                         "bottleneck to steer (ZPRL), not both")


def validate_latent_reasoning(c: PolicyConfig) -> None:
    """Refuse latent-reasoning settings that cannot describe a length choice (when the config is parsed,
    before any data or weights load)."""
    if c.type not in ("state_flow", "flow_vla"):
        raise ValueError(f"policy.latent_reasoning is built for the state_flow and flow_vla policies, not {c.type!r}")
    lengths, group = list(c.latent_lengths), c.latent_group
    if group < 1:
        raise ValueError(f"policy.latent_group must be at least 1, got {group}")
    if not lengths:
        raise ValueError("policy.latent_lengths is empty: latent reasoning needs at least one candidate length")
    if any(n < 1 or n % group for n in lengths):
        raise ValueError(f"policy.latent_lengths {lengths}: every candidate must be a positive multiple of "
                         f"policy.latent_group={group} (an end decision follows each group of latents)")
    if any(b <= a for a, b in zip(lengths, lengths[1:])):
        raise ValueError(f"policy.latent_lengths {lengths} must be strictly increasing (each length is one "
                         "end-decision position, in thinking order)")
    if not c.latent_beta > 0:
        raise ValueError(f"policy.latent_beta (the length temperature) must be > 0, got {c.latent_beta}")
    if not 0 < c.latent_eval_threshold <= 1:
        raise ValueError(f"policy.latent_eval_threshold must be in (0, 1], got {c.latent_eval_threshold}")
    if c.latent_stride < 1:
        raise ValueError(f"policy.latent_stride must be at least 1 frame, got {c.latent_stride}")
    if c.latent_loss_weight < 0 or c.latent_end_weight < 0:
        raise ValueError(f"policy.latent_loss_weight and latent_end_weight must be >= 0, got "
                         f"{c.latent_loss_weight}, {c.latent_end_weight}")

"""Memory-aware fine-tuning options for large (pi0-sized, ~3B) policies.

Applied after the weights are in place: which parts train (vision tower frozen, or the whole
VLM frozen so only the action expert and its projections train), LoRA adapters on the VLM's
projections (peft, the `finetune` extra), bf16 weights, and gradient checkpointing of the
transformer blocks. Checkpoints are always written with LoRA merged, under the plain names.
"""

from __future__ import annotations

import torch

# The VLM: vision tower, its projector, the prefix stream and the prompt embedding.
VLM_PREFIXES = ("vision.", "multi_modal_projector.", "transformer.vlm.", "language.", "language_proj.")
LORA_TARGETS = r"transformer\.vlm\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def _add_lora(policy, rank: int, alpha: float) -> None:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ImportError("policy.lora_rank needs peft: pip install 'vla-rl[finetune]'") from exc
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, lora_dropout=0.0), policy)


def apply_finetune_options(policy) -> dict[str, int]:
    """Set requires_grad, LoRA, dtype and checkpointing from policy.config; returns trainable / frozen counts."""
    c = policy.config
    frozen = VLM_PREFIXES if (c.train_expert_only or c.lora_rank) else ("vision.",) if c.freeze_vision else ()
    for name, p in policy.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
    if c.lora_rank:
        _add_lora(policy, c.lora_rank, c.lora_alpha)  # the adapters are the only trainable VLM weights
    if c.dtype == "bfloat16":
        # Norm weights stay fp32, as the reference keeps them: they are small offsets from 1. So does ZPRL's
        # bottleneck: small, and its latent is what RL moves by fractions of a unit.
        for name, p in policy.named_parameters():
            if "norm" not in name and "lora_" not in name and not name.startswith("vib."):
                p.data = p.data.to(torch.bfloat16)
    policy.transformer.gradient_checkpointing = bool(c.gradient_checkpointing)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {"trainable": trainable, "frozen": sum(p.numel() for p in policy.parameters()) - trainable}


def export_state_dict(policy) -> dict[str, torch.Tensor]:
    """The policy's weights under their plain names, LoRA adapters merged in (the model is not changed)."""
    state = {k: v for k, v in policy.state_dict().items() if "lora_" not in k}
    for name, module in policy.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            weight = module.base_layer.weight.detach()
            for adapter in module.active_adapters:
                delta = module.get_delta_weight(adapter).detach()
                weight = weight + delta.to(weight.dtype)
            state.pop(f"{name}.base_layer.weight")
            state[f"{name}.weight"] = weight
            if f"{name}.base_layer.bias" in state:
                state[f"{name}.bias"] = state.pop(f"{name}.base_layer.bias")
    return state

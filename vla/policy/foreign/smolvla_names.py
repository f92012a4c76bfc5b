"""Parameter names and sizes of published lerobot SmolVLA checkpoints <-> SmolVLAPolicy.

lerobot names SmolVLA's tensors after its module tree: `model.vlm_with_expert.vlm.model.*` is Hugging
Face's SmolVLM (vision_model, connector, text_model), `model.vlm_with_expert.lm_expert.*` the action
expert (a Llama model without token table), and the projections sit under `model.`. Our names keep
the pi0 policy's top-level split (vision / multi_modal_projector / language / transformer.vlm /
transformer.expert), so fine-tuning options (vla/policy/finetune.py) select the same parts.
"""

from __future__ import annotations

import re

from vla.policy.checkpoint import CheckpointError
from vla.policy.foreign.weight_names import NameMap, count_layers, require_tensors

VLM = "model.vlm_with_expert.vlm."
EXPERT = "model.vlm_with_expert.lm_expert."
# Published <-> our names, loading and exporting (lerobot_export.py) alike.
NAMES = NameMap((
    (VLM + "model.vision_model.{rest}", "vision.{rest}"),
    (VLM + "model.connector.{rest}", "multi_modal_projector.{rest}"),
    (VLM + "model.text_model.embed_tokens.weight", "language.embed_tokens.weight"),
    (VLM + "model.text_model.layers.{rest}", "transformer.vlm.layers.{rest}"),
    (VLM + "model.text_model.norm.weight", "transformer.vlm.norm.weight"),
    (EXPERT + "layers.{rest}", "transformer.expert.layers.{rest}"),
    (EXPERT + "norm.weight", "transformer.expert.norm.weight"),
    ("model.{head}.{leaf}", "{head}.{leaf}"),
), groups={"head": "state_proj|action_in_proj|action_out_proj|action_time_mlp_in|action_time_mlp_out",
           "leaf": "weight|bias"})
# Held by the reference but never used for actions: SmolVLA emits no text tokens.
UNUSED = (re.compile(re.escape(VLM) + r"lm_head\.weight"), re.compile(re.escape(EXPERT) + r"lm_head\.weight"))
# Every SmolVLM / SmolVLM2 backbone (SmolLM2 text, SigLIP vision) uses 64-wide attention heads; the head
# count is not in the weights, so it follows from this width.
HEAD_DIM = 64


def to_ours(key: str) -> str | None:
    """Our parameter name; None for tensors the reference never uses; KeyError for unknown names."""
    return NAMES.to_ours(key, UNUSED)


def sizes_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict:
    """SmolVLAConfig's architecture fields from the published tensor shapes."""
    vis, text, ex = VLM + "model.vision_model.", VLM + "model.text_model.", EXPERT
    need = [vis + "embeddings.patch_embedding.weight", vis + "embeddings.position_embedding.weight",
            vis + "encoder.layers.0.mlp.fc1.weight", VLM + "model.connector.modality_projection.proj.weight",
            text + "layers.0.self_attn.q_proj.weight", text + "layers.0.self_attn.k_proj.weight",
            text + "layers.0.mlp.gate_proj.weight", text + "embed_tokens.weight",
            ex + "layers.0.self_attn.q_proj.weight", ex + "layers.0.mlp.gate_proj.weight",
            "model.action_in_proj.weight", "model.state_proj.weight"]
    require_tensors(shapes, need, "SmolVLA")
    vision_width, _, patch, _ = shapes[vis + "embeddings.patch_embedding.weight"]
    n_patches = shapes[vis + "embeddings.position_embedding.weight"][0]
    width, shuffled = shapes[VLM + "model.connector.modality_projection.proj.weight"]
    q_out = shapes[text + "layers.0.self_attn.q_proj.weight"][0]
    k_out = shapes[text + "layers.0.self_attn.k_proj.weight"][0]
    if q_out % HEAD_DIM or k_out % HEAD_DIM or vision_width % HEAD_DIM:
        raise CheckpointError(f"attention widths (text q {q_out}, kv {k_out}, vision {vision_width}) are not "
                              f"multiples of SmolVLM's {HEAD_DIM}-wide heads: not a SmolVLM backbone")
    depth, expert_depth = count_layers(shapes, text + "layers."), count_layers(shapes, ex + "layers.")
    if expert_depth != depth:
        # lerobot's cached inference has no expert layer to run at the skipped prefix layers either.
        raise CheckpointError(f"the expert has {expert_depth} layers for {depth} VLM layers; only one expert "
                              "layer per VLM layer (num_expert_layers -1) is supported")
    return dict(
        image_size=int(round(n_patches ** 0.5)) * patch, patch_size=patch, vision_width=vision_width,
        vision_layers=count_layers(shapes, vis + "encoder.layers."), vision_heads=vision_width // HEAD_DIM,
        vision_mlp_dim=shapes[vis + "encoder.layers.0.mlp.fc1.weight"][0],
        scale_factor=int(round((shuffled / vision_width) ** 0.5)), width=width,
        mlp_dim=shapes[text + "layers.0.mlp.gate_proj.weight"][0], depth=depth,
        num_heads=q_out // HEAD_DIM, num_kv_heads=k_out // HEAD_DIM, head_dim=HEAD_DIM,
        expert_width=shapes[ex + "layers.0.self_attn.q_proj.weight"][1],
        expert_mlp_dim=shapes[ex + "layers.0.mlp.gate_proj.weight"][0],
        vocab_size=shapes[text + "embed_tokens.weight"][0],
        max_action_dim=shapes["model.action_in_proj.weight"][1], max_state_dim=shapes["model.state_proj.weight"][1],
    )

"""Parameter names of published pi0 / pi0.5 checkpoints <-> ours (loading, and exporting to lerobot).

Both lerobot (keys under `model.`) and openpi's PyTorch port (no prefix) name
the modules after Hugging Face's PaliGemma + a second Gemma (the action
expert). transformers moved PaliGemma's submodules in 4.52
(`paligemma.language_model.model.*` -> `paligemma.model.language_model.*`);
older checkpoints are accepted by rewriting to the newer names first.
"""

from __future__ import annotations

import re

from vla.policy.foreign.weight_names import NameMap

PI = "paligemma_with_expert."
# (older transformers prefix, current prefix)
_LEGACY = (
    ("paligemma.language_model.model.", "paligemma.model.language_model."),
    ("paligemma.language_model.lm_head.", "paligemma.lm_head."),
    ("paligemma.vision_tower.", "paligemma.model.vision_tower."),
    ("paligemma.multi_modal_projector.", "paligemma.model.multi_modal_projector."),
)
# Names under `paligemma_with_expert.` <-> ours, loading and exporting (lerobot_export.py) alike.
NAMES = NameMap((
    ("paligemma.model.vision_tower.vision_model.{rest}", "vision.{rest}"),
    ("paligemma.model.multi_modal_projector.linear.{leaf}", "multi_modal_projector.{leaf}"),
    ("paligemma.model.language_model.layers.{rest}", "transformer.vlm.layers.{rest}"),
    ("paligemma.model.language_model.norm.weight", "transformer.vlm.norm.weight"),
    # Gemma ties its output head to the input embedding: one table, two names. lerobot's safetensors
    # keep only the head (listed first, so it is the name to_lerobot gives); an export writes both.
    ("paligemma.lm_head.weight", "language.embed_tokens.weight"),
    ("paligemma.model.language_model.embed_tokens.weight", "language.embed_tokens.weight"),
    ("gemma_expert.model.layers.{rest}", "transformer.expert.layers.{rest}"),
    ("gemma_expert.model.norm.{rest}", "transformer.expert.norm.{rest}"),
), groups={"leaf": "weight|bias"})
# Tensors the reference holds but never uses to produce actions: the expert predicts no tokens.
UNUSED = (re.compile(r"gemma_expert\.lm_head\.weight"), re.compile(r"gemma_expert\.model\.embed_tokens\.weight"))
_PLAIN_EXPERT_NORM = re.compile(
    r"paligemma_with_expert\.gemma_expert\.model\.(layers\.\d+\.(input|post_attention)_layernorm|norm)\.weight")
_HEADS = ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out",
          "time_mlp_in", "time_mlp_out")


def canonical(key: str) -> str:
    """Strip lerobot's `model.` and rewrite pre-4.52 PaliGemma names."""
    if key.startswith("model."):
        key = key[len("model."):]
    if key.startswith(PI):
        rest = key[len(PI):]
        for old, new in _LEGACY:
            if rest.startswith(old):
                rest = new + rest[len(old):]
        key = PI + rest
    return key


def to_ours(key: str, kind: str) -> str | None:
    """Our parameter name for a published one; None for tensors the reference never uses.

    Raises KeyError for a name that belongs to neither (an unexpected tensor)."""
    key = canonical(key)
    if kind == "pi05" and (key.startswith("state_proj.") or _PLAIN_EXPERT_NORM.fullmatch(key)):
        return None  # converted pi0.5 weights may carry these; the reference skips them too
    if key.startswith(PI):
        try:
            return NAMES.to_ours(key[len(PI):], UNUSED)
        except KeyError:
            raise KeyError(key) from None
    head, _, leaf = key.partition(".")
    if head in _HEADS and leaf in ("weight", "bias"):
        # openpi names pi0's action-time MLP `time_mlp_*`; lerobot renames it `action_time_mlp_*`.
        if kind == "pi0" and head.startswith("time_mlp"):
            head = "action_" + head
        elif kind == "pi05" and head.startswith("action_time_mlp"):  # and the reverse for pi0.5
            head = head[len("action_"):]
        return f"{head}.{leaf}"
    raise KeyError(key)


def infer_kind(keys) -> str:
    """pi0 has a state projection and no adaptive norms; pi0.5 has adaRMS `dense` layers in the expert."""
    canon = [canonical(k) for k in keys]
    if any(".input_layernorm.dense." in k for k in canon):
        return "pi05"
    if any(k.startswith("state_proj.") for k in canon):
        return "pi0"
    raise ValueError("weights are neither pi0 (state_proj, plain norms) nor pi0.5 (adaRMS norms)")


def lerobot_names(name: str) -> list[str]:
    """lerobot's names for one of our pi0-layout parameters: several for the tied embedding, `model.`
    plus our name for the action heads (lerobot names them as we do)."""
    return ["model." + PI + n for n in NAMES.published_names(name)] or ["model." + name]


def to_lerobot(name: str) -> str:
    """lerobot's name for one of our pi0-layout parameters (benchmarks and tests write published layouts)."""
    return lerobot_names(name)[0]

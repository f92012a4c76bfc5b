"""What make_lerobot_reference.py (pi0 / pi0.5) and make_lerobot_smolvla_reference.py share.

The features, statistics, inputs and output files of the tiny reference fixtures: both scripts
build their lerobot policy and processors their own way, then hand them to write_reference, which
saves lerobot's checkpoint layout and records lerobot's outputs for fixed inputs and noise. Runs in
lerobot's interpreter; lerobot is imported only inside the functions (pi0's script patches
transformers before lerobot is imported).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

CAMERAS = {"observation.images.front": (3, 48, 64), "observation.images.wrist": (3, 32, 32)}
STATE_DIM, ACTION_DIM = 6, 5
TASKS = ["pick up the red cube", "lift the block"]
SPECIAL = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}


def word_level_tokenizer(path: Path, words: list[str], punctuation: bool = False, bos_template: bool = False,
                         keep_newline: bool = False):
    """A tiny word-level tokenizer standing in for the checkpoint's own, saved to path; (tokenizer, vocab).

    By default whitespace, newlines included, only separates words (the lerobot fixtures were made so);
    keep_newline makes "\n" a token of its own, as in PaliGemma's sentencepiece vocabulary."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = dict(SPECIAL)
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if keep_newline:
        splits = [pre_tokenizers.Split(Regex(r"[^\S\n]+"), "removed"), pre_tokenizers.Split("\n", "isolated")]
    else:
        splits = [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.WhitespaceSplit()]
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits + ([pre_tokenizers.Punctuation()] if punctuation else []))
    if bos_template:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(str(path))
    return fast, vocab


def features() -> dict:
    """input_features / output_features for a lerobot policy config: the two cameras, state and action."""
    from lerobot.configs.types import FeatureType, PolicyFeature

    return dict(
        input_features={**{k: PolicyFeature(FeatureType.VISUAL, s) for k, s in CAMERAS.items()},
                        "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
    )


def stats(quantiles: bool) -> dict:
    """Dataset statistics for state and action (with q01 / q99 when quantiles)."""
    g = torch.Generator().manual_seed(3)

    def feature(d):
        mean = torch.randn(d, generator=g)
        std = torch.rand(d, generator=g) + 0.5
        lo, hi = mean - 2 * std, mean + 2 * std
        out = {"mean": mean, "std": std, "min": lo, "max": hi}
        if quantiles:
            out.update({"q01": lo + 0.1, "q99": hi - 0.1})
        return out

    return {"observation.state": feature(STATE_DIM), "action": feature(ACTION_DIM)}


def randomize(policy, norm_offset: float = 0.0) -> None:
    """Random weights everywhere (lerobot zero-initialises some projections and norms); 1-D ones around
    norm_offset."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in policy.named_parameters():
            value = torch.randn(p.shape, generator=g) * (0.3 if p.dim() == 1 else 1.0 / max(p.shape[-1], 1) ** 0.5)
            if norm_offset:
                value = value + (norm_offset if p.dim() == 1 else 0.0)
            p.copy_(value)


def temporary_output(final: Path) -> Path:
    """The directory to write into; write_reference renames it to final once everything is written."""
    out = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.manual_seed(0)
    return out


def write_reference(out: Path, final: Path, kind: str, policy, pre, post, config, dataset_stats: dict,
                    train_forward) -> None:
    """Save lerobot's checkpoint layout and lerobot's outputs for fixed inputs: the action chunk for a
    given initial noise, and the per-element losses of lerobot's joint training pass (no KV cache),
    train_forward(batch, tokens, masks, train_actions, noise, time)."""
    ckpt = out / "checkpoint"
    policy.save_pretrained(ckpt)
    pre.save_pretrained(ckpt)
    post.save_pretrained(ckpt)

    g = torch.Generator().manual_seed(2)
    b = 2
    images = {k: torch.randint(0, 256, (b, s[1], s[2], 3), dtype=torch.uint8, generator=g) for k, s in CAMERAS.items()}
    state = torch.randn(b, STATE_DIM, generator=g) * dataset_stats["observation.state"]["std"] + \
        dataset_stats["observation.state"]["mean"]
    noise = torch.randn(b, config.chunk_size, config.max_action_dim, generator=g)
    raw = {k: v.permute(0, 3, 1, 2).float() / 255.0 for k, v in images.items()}
    raw.update({"observation.state": state, "task": TASKS})
    with torch.no_grad():
        batch = pre(raw)
        actions = post(policy.predict_action_chunk(batch, noise=noise))
        train_actions = torch.randn(b, config.chunk_size, config.max_action_dim, generator=g)
        time = torch.tensor([0.3, 0.8])
        tokens, masks = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
        losses = train_forward(batch, tokens, masks, train_actions, noise, time)
    tensors = {f"image.{k}": v for k, v in images.items()}
    tensors.update({"state": state, "noise": noise, "actions": actions.contiguous(), "tokens": tokens.contiguous(),
                    "token_mask": masks.contiguous(), "train_actions": train_actions, "train_time": time,
                    "train_losses": losses.contiguous()})
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "inputs.json").write_text(json.dumps({"tasks": TASKS, "kind": kind}))
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    print(f"wrote {final} ({sum(p.numel() for p in policy.parameters())} parameters)")

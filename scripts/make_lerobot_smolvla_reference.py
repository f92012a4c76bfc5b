"""Build a tiny random-weight lerobot SmolVLA checkpoint and its reference actions.

Run with the interpreter that has lerobot 0.4.4 and transformers 4.57 importable
(tests/policy/test_pretrained_smolvla_parity.py drives it through VLA_LEROBOT_PYTHON):

    python scripts/make_lerobot_smolvla_reference.py OUT_DIR

Writes into OUT_DIR (same files as make_lerobot_reference.py writes for pi0):
  checkpoint/   lerobot's own layout (config.json, model.safetensors, policy_*processor*)
  tokenizer/    a tiny word-level tokenizer standing in for SmolVLM2's
  reference.safetensors  inputs, initial noise, lerobot's action chunk and a training forward
  inputs.json   the task strings

lerobot builds SmolVLA's backbone from the SmolVLM2 config and processor it asks the hub for
(`vlm_model_name`); offline, both are answered here with a tiny SmolVLMConfig built in memory and
the tiny tokenizer. The expert's MLP width (lerobot derives it from the width, rounded up to 256)
is shrunk to keep the fixture small. Everything else (preprocessing, masks, positions, the
interleaved self / cross-attention expert, the Euler loop, the joint training forward) is lerobot's
code on stock transformers, which SmolVLA needs no patch for.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerFast, SmolVLMConfig

from lerobot.configs.types import FeatureType, PolicyFeature

# Text heads are 64 wide as in every SmolVLM2 backbone (the loader assumes it); 2 query heads over
# 1 KV head exercise grouped attention. Three text layers, of which SmolVLA keeps the first two
# (one self-attention and one cross-attention expert layer).
TEXT = dict(hidden_size=128, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
            head_dim=64, rms_norm_eps=1e-5, tie_word_embeddings=False)
VISION = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, patch_size=8,
              image_size=32)
SCALE_FACTOR = 2
EXPERT_MLP = 64
CAMERAS = {"observation.images.front": (3, 48, 64), "observation.images.wrist": (3, 32, 32)}
STATE_DIM, ACTION_DIM = 6, 5
WORDS = ["pick", "up", "the", "red", "cube", "lift", "block", "\n", "<fake_token_around_image>", "<global-img>"]


def build_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                 pre_tokenizers.WhitespaceSplit()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(str(path))
    # SmolVLA reads these two ids from SmolVLM's tokenizer (used only with add_image_special_tokens).
    fast.fake_image_token_id = vocab["<fake_token_around_image>"]
    fast.global_image_token_id = vocab["<global-img>"]
    return fast


def tiny_vlm_config(vocab_size: int) -> SmolVLMConfig:
    return SmolVLMConfig(vision_config=VISION, text_config={**TEXT, "vocab_size": vocab_size},
                         scale_factor=SCALE_FACTOR, vocab_size=vocab_size, image_token_id=vocab_size - 1)


def go_offline(tokenizer, vlm_config) -> None:
    """Answer lerobot's hub look-ups (SmolVLM2 config, processor, tokenizer) with the tiny stand-ins."""
    import lerobot.policies.smolvla.smolvlm_with_expert as swe
    import lerobot.processor.tokenizer_processor as tok_mod

    swe.AutoConfig.from_pretrained = staticmethod(lambda *a, **k: copy.deepcopy(vlm_config))
    swe.AutoProcessor.from_pretrained = staticmethod(lambda *a, **k: SimpleNamespace(tokenizer=tokenizer))
    swe.get_intermediate_size = lambda *a, **k: EXPERT_MLP
    tok_mod.AutoTokenizer.from_pretrained = staticmethod(lambda *a, **k: tokenizer)


def stats() -> dict:
    g = torch.Generator().manual_seed(3)

    def feature(d):
        mean = torch.randn(d, generator=g)
        std = torch.rand(d, generator=g) + 0.5
        return {"mean": mean, "std": std, "min": mean - 2 * std, "max": mean + 2 * std}

    return {"observation.state": feature(STATE_DIM), "action": feature(ACTION_DIM)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    final: Path = args.out
    out = final.with_name(f".{final.name}.tmp")  # renamed into place once everything is written
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.manual_seed(0)

    tokenizer = build_tokenizer(out / "tokenizer")
    go_offline(tokenizer, tiny_vlm_config(len(tokenizer)))
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    config = SmolVLAConfig(
        input_features={**{k: PolicyFeature(FeatureType.VISUAL, s) for k, s in CAMERAS.items()},
                        "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
        chunk_size=5, n_action_steps=3, num_steps=4, max_state_dim=8, max_action_dim=8,
        resize_imgs_with_padding=(VISION["image_size"],) * 2, tokenizer_max_length=12, num_vlm_layers=2,
        self_attn_every_n_layers=2, expert_width_multiplier=0.75, vlm_model_name="tiny/SmolVLM2-test",
        load_vlm_weights=False, device="cpu",
    )
    policy = SmolVLAPolicy(config).float().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in policy.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() == 1 else 1.0 / max(p.shape[-1], 1) ** 0.5)
                    + (1.0 if p.dim() == 1 else 0.0))  # norm weights around 1 (Llama multiplies by them)
    dataset_stats = stats()
    pre, post = make_smolvla_pre_post_processors(config, dataset_stats=dataset_stats)
    ckpt = out / "checkpoint"
    policy.save_pretrained(ckpt)
    pre.save_pretrained(ckpt)
    post.save_pretrained(ckpt)

    g = torch.Generator().manual_seed(2)
    b = 2
    images = {k: torch.randint(0, 256, (b, s[1], s[2], 3), dtype=torch.uint8, generator=g) for k, s in CAMERAS.items()}
    state = torch.randn(b, STATE_DIM, generator=g) * dataset_stats["observation.state"]["std"] + \
        dataset_stats["observation.state"]["mean"]
    tasks = ["pick up the red cube", "lift the block"]
    noise = torch.randn(b, config.chunk_size, config.max_action_dim, generator=g)
    raw = {k: v.permute(0, 3, 1, 2).float() / 255.0 for k, v in images.items()}
    raw.update({"observation.state": state, "task": tasks})
    with torch.no_grad():
        batch = pre(raw)
        actions = post(policy.predict_action_chunk(batch, noise=noise))
        # A training forward with fixed noise and time: lerobot's joint pass (no KV cache).
        train_actions = torch.randn(b, config.chunk_size, config.max_action_dim, generator=g)
        time = torch.tensor([0.3, 0.8])
        img, img_masks = policy.prepare_images(batch)
        tokens, masks = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
        losses = policy.model.forward(img, img_masks, tokens, masks, policy.prepare_state(batch), train_actions,
                                      noise=noise, time=time)
    tensors = {f"image.{k}": v for k, v in images.items()}
    tensors.update({"state": state, "noise": noise, "actions": actions.contiguous(), "tokens": tokens.contiguous(),
                    "token_mask": masks.contiguous(), "train_actions": train_actions, "train_time": time,
                    "train_losses": losses.contiguous()})
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "inputs.json").write_text(json.dumps({"tasks": tasks, "kind": "smolvla"}))
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    print(f"wrote {final} ({sum(p.numel() for p in policy.parameters())} parameters)")


if __name__ == "__main__":
    main()

"""Build a tiny random-weight lerobot pi0 / pi0.5 checkpoint and its reference actions.

Run with the interpreter that has lerobot 0.4.4 and transformers 4.57 importable
(tests/policy/test_pretrained_lerobot_parity.py drives it through VLA_LEROBOT_PYTHON):

    python scripts/make_lerobot_reference.py OUT_DIR --kind pi0|pi05

Writes into OUT_DIR:
  checkpoint/   lerobot's own layout (config.json, model.safetensors, policy_*processor*)
  tokenizer/    a tiny word-level tokenizer standing in for PaliGemma's (not shipped offline)
  reference.safetensors  inputs, initial noise, lerobot's action chunk, and a training
                         forward (noise, time, per-element loss)
  inputs.json   the task strings

The model sizes are shrunk in memory (lerobot only offers the full Gemma 2B /
300M and SigLIP So400m shapes); everything else (preprocessing, masks,
positions, the Euler loop, the joint layer used in training) is lerobot's code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot_openpi_shim  # noqa: E402

lerobot_openpi_shim.install()

from safetensors.torch import save_file  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402

# Tiny shapes; head count 8 is fixed by lerobot's joint layer (it reshapes to 8 heads).
TEXT = dict(width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16)
EXPERT = dict(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=8)
IMAGE = 32
CAMERAS = {"observation.images.front": (3, 48, 64), "observation.images.wrist": (3, 32, 32)}
STATE_DIM, ACTION_DIM = 6, 5
WORDS = ["pick", "up", "the", "red", "cube", "lift", "block", "Task", "State", "Action", ",", ";", ":", "\n"]


def build_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for word in WORDS + [str(i) for i in range(256)]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                 pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(str(path))
    return fast


def shrink_lerobot(modeling, vocab_size: int) -> None:
    """Make lerobot build tiny Gemma / SigLIP modules instead of the published sizes."""
    real_get = modeling.get_gemma_config
    sizes = {"gemma_2b": TEXT, "gemma_300m": EXPERT}
    modeling.get_gemma_config = lambda variant: real_get("gemma_300m").__class__(**sizes[variant])
    real_paligemma = modeling.PaliGemmaForConditionalGeneration

    def tiny_paligemma(config):
        for key, value in VISION.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = vocab_size
        config._vocab_size = vocab_size
        config.image_token_index = vocab_size - 1
        return real_paligemma(config=config)

    modeling.PaliGemmaForConditionalGeneration = tiny_paligemma
    real_gemma = modeling.GemmaForCausalLM
    modeling.GemmaForCausalLM = lambda config: real_gemma(config=_with_vocab(config, vocab_size))


def _with_vocab(config, vocab_size):
    config.vocab_size = vocab_size
    return config


def stats() -> dict:
    g = torch.Generator().manual_seed(3)

    def feature(d):
        mean = torch.randn(d, generator=g)
        std = torch.rand(d, generator=g) + 0.5
        lo, hi = mean - 2 * std, mean + 2 * std
        return {"mean": mean, "std": std, "min": lo, "max": hi, "q01": lo + 0.1, "q99": hi - 0.1}

    return {"observation.state": feature(STATE_DIM), "action": feature(ACTION_DIM)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--kind", choices=["pi0", "pi05"], default="pi0")
    args = parser.parse_args()
    final: Path = args.out
    out = final.with_name(f".{final.name}.tmp")  # renamed into place once everything is written
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.manual_seed(0)

    tokenizer = build_tokenizer(out / "tokenizer")
    vocab_size = 300
    if args.kind == "pi0":
        from lerobot.policies.pi0 import modeling_pi0 as modeling
        from lerobot.policies.pi0 import processor_pi0 as processor
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
        make_processors, policy_cls = processor.make_pi0_pre_post_processors, modeling.PI0Policy
        max_tokens = 16
    else:
        from lerobot.policies.pi05 import modeling_pi05 as modeling
        from lerobot.policies.pi05 import processor_pi05 as processor
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
        make_processors, policy_cls = processor.make_pi05_pre_post_processors, modeling.PI05Policy
        max_tokens = 40
    shrink_lerobot(modeling, vocab_size)
    import lerobot.processor.tokenizer_processor as tok_mod

    # The processor asks the hub for PaliGemma's tokenizer by name; hand it the local stand-in.
    tok_mod.AutoTokenizer.from_pretrained = staticmethod(lambda *a, **k: tokenizer)

    config = Config(
        input_features={**{k: PolicyFeature(FeatureType.VISUAL, s) for k, s in CAMERAS.items()},
                        "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
        chunk_size=5, n_action_steps=3, num_inference_steps=4, max_state_dim=8, max_action_dim=8,
        image_resolution=(IMAGE, IMAGE), tokenizer_max_length=max_tokens, device="cpu",
    )
    policy = policy_cls(config).float().eval()
    # Random weights everywhere (lerobot zero-initialises the adaRMS projections and norms).
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() == 1 else 1.0 / max(p.shape[-1], 1) ** 0.5))
    dataset_stats = stats()
    pre, post = make_processors(config, dataset_stats=dataset_stats)
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
        # A training forward with fixed noise and time: lerobot's joint layer (no KV cache).
        lerobot_actions = torch.randn(b, config.chunk_size, config.max_action_dim, generator=g)
        time = torch.tensor([0.3, 0.8])
        img, img_masks = policy._preprocess_images(batch)
        tokens, masks = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
        fwd_args = (img, img_masks, tokens, masks) + ((policy.prepare_state(batch),) if args.kind == "pi0" else ())
        losses = policy.model.forward(*fwd_args, lerobot_actions, noise=noise, time=time)
    tensors = {f"image.{k}": v for k, v in images.items()}
    tensors.update({"state": state, "noise": noise, "actions": actions.contiguous(), "tokens": tokens.contiguous(),
                    "token_mask": masks.contiguous(), "train_actions": lerobot_actions, "train_time": time,
                    "train_losses": losses.contiguous()})
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "inputs.json").write_text(json.dumps({"tasks": tasks, "kind": args.kind}))
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    print(f"wrote {final} ({sum(p.numel() for p in policy.parameters())} parameters)")


if __name__ == "__main__":
    main()

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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot_openpi_shim  # noqa: E402

lerobot_openpi_shim.install()

from lerobot_reference_common import (features, randomize, stats, temporary_output,  # noqa: E402
                                      word_level_tokenizer, write_reference)

# Tiny shapes; head count 8 is fixed by lerobot's joint layer (it reshapes to 8 heads).
TEXT = dict(width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16)
EXPERT = dict(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=8)
IMAGE = 32
WORDS = ["pick", "up", "the", "red", "cube", "lift", "block", "Task", "State", "Action", ",", ";", ":", "\n"]


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--kind", choices=["pi0", "pi05"], default="pi0")
    args = parser.parse_args()
    final: Path = args.out
    out = temporary_output(final)
    tokenizer, _ = word_level_tokenizer(out / "tokenizer", WORDS + [str(i) for i in range(256)], punctuation=True,
                                        bos_template=True)
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
        **features(), chunk_size=5, n_action_steps=3, num_inference_steps=4, max_state_dim=8, max_action_dim=8,
        image_resolution=(IMAGE, IMAGE), tokenizer_max_length=max_tokens, device="cpu",
    )
    policy = policy_cls(config).float().eval()
    randomize(policy)  # lerobot zero-initialises the adaRMS projections and norms
    dataset_stats = stats(quantiles=True)
    pre, post = make_processors(config, dataset_stats=dataset_stats)

    def train_forward(batch, tokens, masks, train_actions, noise, time):  # lerobot's joint layer (no KV cache)
        img, img_masks = policy._preprocess_images(batch)
        state = (policy.prepare_state(batch),) if args.kind == "pi0" else ()
        return policy.model.forward(img, img_masks, tokens, masks, *state, train_actions, noise=noise, time=time)

    write_reference(out, final, args.kind, policy, pre, post, config, dataset_stats, train_forward)


if __name__ == "__main__":
    main()

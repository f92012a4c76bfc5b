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
from pathlib import Path
from types import SimpleNamespace

from transformers import SmolVLMConfig

from lerobot_reference_common import features, randomize, stats, temporary_output, word_level_tokenizer, write_reference

# Text heads are 64 wide as in every SmolVLM2 backbone (the loader assumes it); 2 query heads over
# 1 KV head exercise grouped attention. Three text layers, of which SmolVLA keeps the first two
# (one self-attention and one cross-attention expert layer).
TEXT = dict(hidden_size=128, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
            head_dim=64, rms_norm_eps=1e-5, tie_word_embeddings=False)
VISION = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, patch_size=8,
              image_size=32)
SCALE_FACTOR = 2
EXPERT_MLP = 64
WORDS = ["pick", "up", "the", "red", "cube", "lift", "block", "\n", "<fake_token_around_image>", "<global-img>"]


def build_tokenizer(path: Path):
    fast, vocab = word_level_tokenizer(path, WORDS)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    final: Path = args.out
    out = temporary_output(final)
    tokenizer = build_tokenizer(out / "tokenizer")
    go_offline(tokenizer, tiny_vlm_config(len(tokenizer)))
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    config = SmolVLAConfig(
        **features(), chunk_size=5, n_action_steps=3, num_steps=4, max_state_dim=8, max_action_dim=8,
        resize_imgs_with_padding=(VISION["image_size"],) * 2, tokenizer_max_length=12, num_vlm_layers=2,
        self_attn_every_n_layers=2, expert_width_multiplier=0.75, vlm_model_name="tiny/SmolVLM2-test",
        load_vlm_weights=False, device="cpu",
    )
    policy = SmolVLAPolicy(config).float().eval()
    randomize(policy, norm_offset=1.0)  # norm weights around 1 (Llama multiplies by them)
    dataset_stats = stats(quantiles=False)
    pre, post = make_smolvla_pre_post_processors(config, dataset_stats=dataset_stats)

    def train_forward(batch, tokens, masks, train_actions, noise, time):  # lerobot's joint pass (no KV cache)
        img, img_masks = policy.prepare_images(batch)
        return policy.model.forward(img, img_masks, tokens, masks, policy.prepare_state(batch), train_actions,
                                    noise=noise, time=time)

    write_reference(out, final, "smolvla", policy, pre, post, config, dataset_stats, train_forward)


if __name__ == "__main__":
    main()

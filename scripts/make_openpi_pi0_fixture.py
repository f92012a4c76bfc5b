"""Build tests/policy/fixtures/openpi_{pi0,pi05}_reference with openpi's own PyTorch model (independent reference).

Runs in a separate venv holding openpi's pinned transformers with openpi's `transformers_replace`
files copied over it; scripts/make_openpi_reference.sh builds it (torch held at the project's CPU
build by a constraints file) and runs this for pi0 and pi0.5 (docs/PRETRAINED.md, "openpi reference"):

    OPENPI_GIT=/path/to/openpi/.git scripts/make_openpi_reference.sh
    # or, in that venv: python scripts/make_openpi_pi0_fixture.py OUT --openpi-git GITDIR [--kind pi0|pi05]

What runs is openpi's code, unmodified: models_pytorch/pi0_pytorch.py (PI0Pytorch.sample_actions:
prefix KV cache, masks, positions, Euler loop), gemma_pytorch.py (PaliGemmaWithExpertModel), and
preprocessing_pytorch.py (image resize with padding), on the patched transformers (Gemma / adaRMS
norms, SigLIP, PaliGemma). openpi's JAX-only modules are not imported; instead, from openpi's own
source files, only these top-level definitions are compiled (with `from __future__ import
annotations`, so JAX type annotations are never evaluated) into stand-in modules:
  - openpi/models/gemma.py: `Config`, `get_config` (the module imports flax / jax); two tiny variants
    are added next to openpi's own ones;
  - openpi/shared/image_tools.py: `resize_with_pad_torch` (the module jits a JAX resize at import);
  - openpi/models/tokenizer.py: `PaligemmaTokenizer` (its tokenize method; its __init__ downloads
    PaliGemma's sentencepiece model, so the instance gets a tiny word-level tokenizer instead);
  - openpi/transforms.py: `Normalize`, `Unnormalize`, `pad_to_dim`, `_assert_quantile_stats` (their
    per-array methods; flax's `flatten_dict` is the identity on our one-level statistics).
openpi/shared/normalize.py (NormStats, save) is imported as is (pydantic, numpydantic).

Sizes: openpi only builds Gemma 2B / 300M and SigLIP So400m with a 257152-token vocabulary
(hard-coded in PaliGemmaWithExpertModel). The two Hugging Face constructors it calls are wrapped to
shrink the vision tower (32 wide, 1 layer, 2 heads, patch 16 on openpi's 224 px), the vocabulary (300)
and the projector (to the tiny text width) before the modules are built; nothing else changes.
Weights are random (seeded), norms included, and saved the way openpi's train_pytorch.py saves them
(safetensors.torch.save_model), with assets/<id>/norm_stats.json written by openpi's normalize.save.

Writes into OUT: checkpoint/ (model.safetensors, assets/tiny_robot/norm_stats.json), tokenizer/ (the
word-level stand-in; "\n" is a token of its own, as in PaliGemma's vocabulary), reference.safetensors
(uint8 HWC images, raw state, openpi's token ids and mask, noise, openpi's raw sample_actions output and
the un-normalised actions), provenance.json and README.md.
"""

from __future__ import annotations

import __future__
import argparse
import ast
import dataclasses
import datetime
import json
import logging
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

HERE = Path(__file__).resolve().parent
TINY_GEMMA = {  # (width, depth, mlp_dim, num_heads, num_kv_heads, head_dim): openpi's joint layer needs 8 heads
    "tiny_vlm": (64, 2, 64, 8, 1, 16),
    "tiny_expert": (32, 2, 32, 8, 1, 16),
}
VISION = dict(hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=16)
VOCAB = 300
STATE_DIM, ACTION_DIM, BATCH = 6, 5, 2
CAMERAS = {"base_0_rgb": (24, 32), "left_wrist_0_rgb": (32, 24), "right_wrist_0_rgb": (20, 20)}  # (H, W), resized by openpi
TASKS = ["pick up the red cube", "  lift_the block"]  # openpi strips and turns "_" into a space
WORDS = ["pick", "up", "the", "red", "cube", "lift", "block", "Task", "State", "Action", ",", ";", ":", "\n"]


README = """# openpi {kind} reference (generated: do not edit)

Written by openpi's own PyTorch {kind} (models_pytorch/pi0_pytorch.py `PI0Pytorch.sample_actions`)
at openpi commit {openpi_commit}, on transformers {transformers},
torch {torch} (openpi pins 2.7.1), numpy {numpy}, Python {python}, on {date}, by

    {command}

(scripts/make_openpi_reference.sh builds the venv and runs it). A tiny model with seeded random weights,
in the layout openpi's train_pytorch.py saves (checkpoint/model.safetensors and
checkpoint/assets/tiny_robot/norm_stats.json), a word-level tokenizer standing in for PaliGemma's
(tokenizer/), and reference.safetensors: the inputs (uint8 camera images, raw state, the tasks below,
the initial noise), openpi's tokens and the actions it sampled in {num_steps} Euler steps (`raw_actions`
normalised and 32 wide, `actions` un-normalised and cut to the robot's dims).
Tasks: {tasks!r}. provenance.json has the sizes. tests/policy/test_pretrained_openpi_reference.py loads the checkpoint
with the project's loader and compares; docs/PRETRAINED.md says what the comparison found.
"""


def compile_definitions(source: Path, names: set[str], namespace: dict) -> dict:
    """Execute only the named top-level classes / functions of an openpi source file in namespace."""
    tree = ast.parse(source.read_text(), str(source))
    body = [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in names]
    missing = names - {n.name for n in body}
    if missing:
        raise RuntimeError(f"{source} has no {sorted(missing)}")
    code = compile(ast.Module(body=body, type_ignores=[]), str(source), "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, namespace)  # noqa: S102
    return namespace


def install_stand_ins(src: Path) -> dict:
    """Stand-in modules for openpi's JAX-importing ones (see the module docstring); returns the
    extracted tokenizer / transform definitions."""
    sys.path.insert(0, str(src))
    gemma = sys.modules["openpi.models.gemma"] = types.ModuleType("openpi.models.gemma")
    ns = gemma.__dict__
    ns.update(dataclasses=dataclasses, lora=types.SimpleNamespace(LoRAConfig=object))
    compile_definitions(src / "openpi/models/gemma.py", {"Config", "get_config"}, ns)
    openpi_get_config = ns["get_config"]

    def get_config(variant):
        if variant in TINY_GEMMA:
            w, d, m, h, kv, hd = TINY_GEMMA[variant]
            return ns["Config"](width=w, depth=d, mlp_dim=m, num_heads=h, num_kv_heads=kv, head_dim=hd)
        return openpi_get_config(variant)

    gemma.get_config = get_config
    image_tools = types.ModuleType("openpi.shared.image_tools")
    image_tools.__dict__.update(torch=torch, F=F)
    compile_definitions(src / "openpi/shared/image_tools.py", {"resize_with_pad_torch"}, image_tools.__dict__)
    import openpi.models  # noqa: F401  (empty package __init__)
    import openpi.shared  # noqa: F401

    sys.modules["openpi.models.gemma"] = gemma
    sys.modules["openpi.shared.image_tools"] = image_tools
    openpi.models.gemma = gemma
    openpi.shared.image_tools = image_tools
    # dataclasses look their class's module up in sys.modules
    extracted = sys.modules["openpi_extracted"] = types.ModuleType("openpi_extracted")
    # flatten_dict is flax.traverse_util's; our statistics are one flat level already ({"state": ..., "actions": ...}).
    extracted.__dict__.update(np=np, logging=logging, dataclasses=dataclasses, DataTransformFn=object,
                              flatten_dict=lambda tree: tree)
    compile_definitions(src / "openpi/models/tokenizer.py", {"PaligemmaTokenizer"}, extracted.__dict__)
    compile_definitions(src / "openpi/transforms.py", {"Normalize", "Unnormalize", "pad_to_dim", "_assert_quantile_stats"},
                        extracted.__dict__)
    return extracted.__dict__


def shrink_sizes(gemma_pytorch) -> None:
    """Wrap the two transformers constructors PaliGemmaWithExpertModel calls so the modules are tiny."""
    real_paligemma, real_gemma = gemma_pytorch.PaliGemmaForConditionalGeneration, gemma_pytorch.GemmaForCausalLM

    def tiny_paligemma(config):
        for key, value in VISION.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = VOCAB
        config._vocab_size = VOCAB  # noqa: SLF001
        config.image_token_index = VOCAB - 1
        return real_paligemma(config=config)

    def tiny_gemma(config):
        config.vocab_size = VOCAB
        return real_gemma(config=config)

    gemma_pytorch.PaliGemmaForConditionalGeneration = tiny_paligemma
    gemma_pytorch.GemmaForCausalLM = tiny_gemma


class WordTokenizerForOpenpi:
    """The sentencepiece calls PaligemmaTokenizer.tokenize makes (encode(text, add_bos=...)), answered by
    the word-level tokenizer that our loader reads from tokenizer/."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([self.tokenizer.bos_token_id] if add_bos else []) + ids


def norm_stats(normalize, kind: str) -> dict:
    g = torch.Generator().manual_seed(3)
    out = {}
    for key, dim in (("state", STATE_DIM), ("actions", ACTION_DIM)):
        mean = torch.randn(dim, generator=g).numpy()
        std = (torch.rand(dim, generator=g) + 0.5).numpy()
        out[key] = normalize.NormStats(mean=mean, std=std, q01=mean - 1.8 * std, q99=mean + 1.8 * std)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--openpi-git", type=Path, required=True, help="openpi's git directory (bare or .git)")
    parser.add_argument("--kind", choices=["pi0", "pi05"], default="pi0")
    parser.add_argument("--num-steps", type=int, default=10)  # openpi's sample_actions default
    args = parser.parse_args()
    git = ["git", f"--git-dir={args.openpi_git}"]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    export = Path(tempfile.mkdtemp(prefix="openpi-src-"))
    archive = subprocess.run([*git, "archive", commit, "src/openpi"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(export)], input=archive, check=True)
    src = export / "src"
    extracted = install_stand_ins(src)

    import safetensors.torch
    import transformers
    from transformers.models.siglip import check

    assert check.check_whether_transformers_replace_is_installed_correctly(), "copy openpi's transformers_replace first"
    import openpi.models_pytorch.gemma_pytorch as gemma_pytorch
    import openpi.models_pytorch.pi0_pytorch as pi0_pytorch
    import openpi.shared.normalize as normalize

    shrink_sizes(gemma_pytorch)
    pi05 = args.kind == "pi05"
    # Pi0Config's fields (openpi/models/pi0_config.py imports flax); float32, no torch.compile.
    config = types.SimpleNamespace(dtype="float32", paligemma_variant="tiny_vlm", action_expert_variant="tiny_expert",
                                   action_dim=32, action_horizon=50, max_token_len=200 if pi05 else 48, pi05=pi05,
                                   pytorch_compile_mode=None)
    torch.manual_seed(0)
    model = pi0_pytorch.PI0Pytorch(config).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random everywhere (openpi zero-initialises norms and the adaRMS projections)
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() == 1 else 1.0 / max(p.shape[-1], 1) ** 0.5))

    out = args.out
    out.mkdir(parents=True, exist_ok=False)
    sys.path.insert(0, str(HERE))
    from lerobot_reference_common import word_level_tokenizer  # noqa: E402  (imports nothing of lerobot)

    hf_tokenizer, _ = word_level_tokenizer(out / "tokenizer", WORDS + [str(i) for i in range(256)], punctuation=True,
                                           bos_template=True, keep_newline=True)
    tokenizer = extracted["PaligemmaTokenizer"].__new__(extracted["PaligemmaTokenizer"])
    tokenizer._max_len = config.max_token_len  # noqa: SLF001
    tokenizer._tokenizer = WordTokenizerForOpenpi(hf_tokenizer)  # noqa: SLF001

    ck = out / "checkpoint"
    ck.mkdir()
    safetensors.torch.save_model(model, str(ck / "model.safetensors"))  # as openpi's train_pytorch.py saves
    stats = norm_stats(normalize, args.kind)
    normalize.save(ck / "assets" / "tiny_robot", stats)

    # Inputs: uint8 camera images (openpi's Observation.from_dict maps them to [-1, 1]), raw state, prompts.
    images = {k: torch.randint(0, 256, (BATCH, h, w, 3), generator=g, dtype=torch.uint8) for k, (h, w) in CAMERAS.items()}
    state = torch.randn(BATCH, STATE_DIM, generator=g) * 2.0
    noise = torch.randn(BATCH, config.action_horizon, config.action_dim, generator=g)
    Normalize, Unnormalize = extracted["Normalize"], extracted["Unnormalize"]
    normalizer = Normalize(stats, use_quantiles=pi05)
    norm_state = np.stack([(normalizer._normalize_quantile if pi05 else normalizer._normalize)(s, stats["state"])  # noqa: SLF001
                           for s in state.numpy()])
    padded_state = extracted["pad_to_dim"](norm_state, config.action_dim)
    tokens, masks = zip(*[tokenizer.tokenize(t, s if pi05 else None) for t, s in zip(TASKS, norm_state)])
    tokens = torch.as_tensor(np.stack(tokens), dtype=torch.long)
    token_mask = torch.as_tensor(np.stack(masks), dtype=torch.bool)
    observation = types.SimpleNamespace(
        images={k: v.float().permute(0, 3, 1, 2) / 255.0 * 2.0 - 1.0 for k, v in images.items()},
        image_masks={k: torch.ones(BATCH, dtype=torch.bool) for k in images},
        state=torch.as_tensor(padded_state, dtype=torch.float32), tokenized_prompt=tokens,
        tokenized_prompt_mask=token_mask, token_ar_mask=None, token_loss_mask=None)
    raw = model.sample_actions(torch.device("cpu"), observation, noise=noise.clone(), num_steps=args.num_steps)
    unnorm = Unnormalize(stats, use_quantiles=pi05)
    actions = np.stack([(unnorm._unnormalize_quantile if pi05 else unnorm._unnormalize)(a, stats["actions"])  # noqa: SLF001
                        for a in raw.numpy()])[..., :ACTION_DIM]  # robots' output transforms cut to their dims

    reference = {f"image.{k}": v.contiguous() for k, v in images.items()}
    reference.update(state=state, tokens=tokens, token_mask=token_mask, noise=noise, raw_actions=raw.contiguous(),
                     actions=torch.as_tensor(np.ascontiguousarray(actions), dtype=torch.float32))
    safetensors.torch.save_file(reference, str(out / "reference.safetensors"))
    provenance = {
        "kind": args.kind, "tasks": TASKS, "num_steps": args.num_steps, "openpi_commit": commit,
        "transformers": transformers.__version__ + " with openpi's transformers_replace", "torch": torch.__version__,
        "numpy": np.__version__, "python": sys.version.split()[0],
        "date": datetime.date.today().isoformat(),
        "command": "python scripts/make_openpi_pi0_fixture.py OUT --openpi-git <openpi git dir> "
                   f"--kind {args.kind} --num-steps {args.num_steps}",
        "sizes": {"gemma": TINY_GEMMA, "vision": VISION, "vocab": VOCAB, "action_dim": config.action_dim,
                  "action_horizon": config.action_horizon, "max_token_len": config.max_token_len},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    (out / "README.md").write_text(README.format(**provenance))
    print(json.dumps(provenance, indent=1))


if __name__ == "__main__":
    main()

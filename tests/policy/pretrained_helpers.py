"""Tiny pi0 / pi0.5 checkpoints in the published layouts, for the loader tests.

tests/policy/fixtures/lerobot_{pi0,pi05} were written by lerobot 0.4.4 itself
(scripts/make_lerobot_reference.py): its save_pretrained layout, tensor names
and shapes, plus lerobot's action chunks for fixed inputs and noise; lerobot_smolvla likewise
(scripts/make_lerobot_smolvla_reference.py). lift_checkpoint works for all three kinds.
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(kind: str) -> Path:
    return FIXTURES / f"lerobot_{kind}"


def copy_fixture(kind: str, dest: Path) -> Path:
    shutil.copytree(fixture(kind), dest)
    return dest


def reference_batch(root: Path) -> tuple[dict, dict]:
    ref = load_file(str(root / "reference.safetensors"))
    batch = {"observation.images." + k[len("image.observation.images."):]: v for k, v in ref.items() if k.startswith("image.")}
    batch["observation.state"] = ref["state"]
    batch["task"] = json.loads((root / "inputs.json").read_text())["tasks"]
    return batch, ref


def edit_weights(path: Path, edit) -> None:
    weights = load_file(str(path))
    edit(weights)
    save_file(weights, str(path))


def to_openpi_layout(lerobot_dir: Path, dest: Path) -> Path:
    """openpi's PyTorch layout: no `model.` prefix, pre-4.52 PaliGemma names, assets/<name>/norm_stats.json."""
    dest.mkdir(parents=True)
    kind = json.loads((lerobot_dir / "config.json").read_text())["type"]
    weights = {}
    for key, value in load_file(str(lerobot_dir / "model.safetensors")).items():
        key = key[len("model."):]
        key = key.replace("paligemma.model.language_model.", "paligemma.language_model.model.")
        key = key.replace("paligemma.model.vision_tower.", "paligemma.vision_tower.")
        key = key.replace("paligemma.model.multi_modal_projector.", "paligemma.multi_modal_projector.")
        key = key.replace("paligemma.lm_head.", "paligemma.language_model.lm_head.")
        key = key.replace("action_time_mlp_", "time_mlp_")  # openpi's pi0 name
        weights[key] = value
    save_file(weights, str(dest / "model.safetensors"))
    stats_file = next(lerobot_dir.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    stats = load_file(str(stats_file))
    norm = {name: {s: stats[f"{feat}.{s}"].tolist() for s in ("mean", "std", "q01", "q99")}
            for name, feat in (("state", "observation.state"), ("actions", "action"))}
    (dest / "assets" / "tiny_robot").mkdir(parents=True)
    (dest / "assets" / "tiny_robot" / "norm_stats.json").write_text(json.dumps({"norm_stats": norm}))
    assert kind in ("pi0", "pi05")
    return dest


def lift_checkpoint(kind: str, dest: Path) -> Path:
    """The lerobot fixture re-labelled for robosuite Lift (agentview 64 px, state 8, action 7), tokenizer inside.

    The weights stay lerobot's (their padded widths, 8, fit Lift's dims); only features and stats change."""
    ck = shutil.copytree(fixture(kind) / "checkpoint", dest)
    shutil.copytree(fixture(kind) / "tokenizer", ck / "tokenizer")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["input_features"] = {"observation.images.agentview": {"type": "VISUAL", "shape": [3, 64, 64]},
                             "observation.state": {"type": "STATE", "shape": [8]}}
    cfg["output_features"] = {"action": {"type": "ACTION", "shape": [7]}}
    (ck / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    stats = {}
    for feature, dim in (("observation.state", 8), ("action", 7)):
        stats.update({f"{feature}.mean": torch.zeros(dim), f"{feature}.std": torch.ones(dim),
                      f"{feature}.min": -torch.ones(dim), f"{feature}.max": torch.ones(dim),
                      f"{feature}.q01": -torch.ones(dim) + 0.01 * torch.rand(dim, generator=g),
                      f"{feature}.q99": torch.ones(dim)})
    for f in ck.glob("*normalizer_processor.safetensors"):
        save_file(stats, str(f))
    return ck

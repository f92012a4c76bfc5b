"""Load a `vla export --format lerobot` directory in lerobot 0.4.4 and record its actions.

Run with the interpreter that has lerobot 0.4.4 and transformers 4.57 importable
(tests/policy/test_lerobot_export.py drives it through VLA_LEROBOT_PYTHON):

    python scripts/check_lerobot_export.py EXPORT_DIR FIXTURE_ROOT OUT.safetensors --kind pi0|pi05|smolvla

The export must hold a model of the tiny fixture's sizes (tests/policy/fixtures/lerobot_<kind>, made by
make_lerobot_reference.py / make_lerobot_smolvla_reference.py): lerobot builds only the published sizes,
so the same in-memory shrinking those scripts use is applied, then everything is lerobot's own loading:
<Policy>.from_pretrained(EXPORT_DIR) and PolicyProcessorPipeline.from_pretrained for both processor files,
as lerobot's policies/factory.py loads a pretrained policy. lerobot's pi0 from_pretrained falls back to
random weights when its strict load fails, so every exported tensor is compared with the loaded model.
Writes the action chunk for the fixture's inputs and initial noise to OUT.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def patch_lerobot(kind: str, fixture_root: Path):
    """The fixture scripts' shrinking and offline tokenizer; returns (policy class, tokenizer)."""
    if kind == "smolvla":
        from make_lerobot_smolvla_reference import build_tokenizer, go_offline, tiny_vlm_config

        tokenizer = build_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer")
        go_offline(tokenizer, tiny_vlm_config(len(tokenizer)))
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        return SmolVLAPolicy
    from make_lerobot_reference import shrink_lerobot  # installs the openpi shim before lerobot is imported
    from transformers import AutoTokenizer

    if kind == "pi0":
        from lerobot.policies.pi0 import modeling_pi0 as modeling
        policy_cls = modeling.PI0Policy
    else:
        from lerobot.policies.pi05 import modeling_pi05 as modeling
        policy_cls = modeling.PI05Policy
    shrink_lerobot(modeling, 300)  # the fixture's vocabulary
    tokenizer = AutoTokenizer.from_pretrained(str(fixture_root / "tokenizer"), local_files_only=True)
    import lerobot.processor.tokenizer_processor as tok_mod

    tok_mod.AutoTokenizer.from_pretrained = staticmethod(lambda *a, **k: tokenizer)
    return policy_cls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("export", type=Path)
    parser.add_argument("fixture", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--kind", choices=["pi0", "pi05", "smolvla"], required=True)
    args = parser.parse_args()
    policy_cls = patch_lerobot(args.kind, args.fixture)

    import torch
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import (batch_to_transition, policy_action_to_transition, transition_to_batch,
                                              transition_to_policy_action)
    from safetensors.torch import load_file, save_file

    policy = policy_cls.from_pretrained(str(args.export)).float().eval()
    exported, held = load_file(str(args.export / "model.safetensors")), policy.state_dict()
    wrong = sorted(k for k, v in exported.items() if k not in held or not torch.equal(held[k].float(), v.float()))
    missing = sorted(set(held) - set(exported))
    assert not wrong and not missing, f"lerobot did not load the export: differs {wrong[:5]}, missing {missing[:5]}"
    pre = PolicyProcessorPipeline.from_pretrained(str(args.export), config_filename="policy_preprocessor.json",
                                                  to_transition=batch_to_transition, to_output=transition_to_batch)
    post = PolicyProcessorPipeline.from_pretrained(str(args.export), config_filename="policy_postprocessor.json",
                                                   to_transition=policy_action_to_transition,
                                                   to_output=transition_to_policy_action)
    ref = load_file(str(args.fixture / "reference.safetensors"))
    raw = {k[len("image."):]: v.permute(0, 3, 1, 2).float() / 255.0 for k, v in ref.items() if k.startswith("image.")}
    raw.update({"observation.state": ref["state"], "task": json.loads((args.fixture / "inputs.json").read_text())["tasks"]})
    with torch.no_grad():
        actions = post(policy.predict_action_chunk(pre(raw), noise=ref["noise"]))
    save_file({"actions": actions.contiguous()}, str(args.out))
    print(f"wrote {args.out}: lerobot {args.kind} actions {tuple(actions.shape)}")


if __name__ == "__main__":
    main()

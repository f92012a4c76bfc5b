"""`vla export --format lerobot`: ours -> lerobot -> ours gives the same actions, the files are the ones
lerobot 0.4.4 writes (compared with tests/policy/fixtures/lerobot_*, which lerobot itself wrote), and what
lerobot cannot load is refused. test_lerobot_loads_the_export runs lerobot itself (VLA_LEROBOT_PYTHON)."""

import json
import subprocess

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.policy.pretrained_helpers import (LEROBOT_PYTHON, REPO, fixture, lerobot_env, load_reference,
                                             reference_batch, requires_lerobot)
from vla.cli import main
from vla.policy.checkpoint import save_policy
from vla.policy.registry import load_policy

KINDS = ["pi0", "pi05", "smolvla"]


def ours(kind: str, tmp_path, normalization: str = "", eps: float = 0.0):
    """The lerobot fixture saved as this project's checkpoint (flow_vla / flow_vla_smolvla), optionally with
    another normalisation mode and eps (the statistics kept)."""
    policy = load_reference(fixture(kind))
    if normalization:
        policy.config.normalization = policy.normalizer.mode = normalization
        policy.config.normalization_eps = policy.normalizer.eps = eps
    return save_policy(policy, tmp_path / f"ours_{kind}")


def export(src, out, *extra) -> int:
    return main(["export", "--policy", str(src), "--output", str(out), "--custom_sizes=true", *extra])


def actions(policy, kind: str) -> torch.Tensor:
    batch, ref = reference_batch(fixture(kind))
    return policy.predict_action_chunk(batch, noise=ref["noise"])


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_the_same_actions(kind, tmp_path):
    src = ours(kind, tmp_path)
    assert export(src, tmp_path / "lerobot") == 0
    back = load_policy(tmp_path / "lerobot")  # our lerobot-format loader
    assert json.loads((tmp_path / "lerobot" / "config.json").read_text())["type"] == kind
    assert (actions(back, kind) - actions(load_policy(src), kind)).abs().max() < 1e-6


@pytest.mark.parametrize("mode", ["mean_std", "min_max"])
def test_normalisation_is_converted_exactly(mode, tmp_path):
    """A large eps makes any misplaced eps visible: lerobot's formulas differ from ours in where it goes."""
    src = ours("pi0", tmp_path, normalization=mode, eps=0.05)
    assert export(src, tmp_path / "lerobot") == 0
    a, b = load_policy(src), load_policy(tmp_path / "lerobot")
    assert (actions(b, "pi0") - actions(a, "pi0")).abs().max() < 1e-6
    # lerobot's own formulas (processor/normalize_processor.py) on the exported statistics and eps 0
    step = json.loads((tmp_path / "lerobot" / "policy_preprocessor.json").read_text())["steps"][-1]
    assert step["config"]["eps"] == 0.0
    stats = load_file(str(tmp_path / "lerobot" / step["state_file"]))
    x = torch.randn(3, 5)
    if mode == "mean_std":
        normed = (x - stats["action.mean"]) / (stats["action.std"] + 0.0)
        restored = normed * stats["action.std"] + stats["action.mean"]
    else:
        lo, hi = stats["action.min"], stats["action.max"]
        normed = 2 * (x - lo) / (hi - lo) - 1
        restored = (normed + 1) / 2 * (hi - lo) + lo
    assert torch.allclose(normed, a.normalizer.normalize("action", x), atol=1e-6)
    assert torch.allclose(restored, a.normalizer.unnormalize("action", normed), atol=1e-6)


def _visual_shapes_dropped(features: dict) -> dict:
    # Camera shapes: lerobot's fixture records the dataset's, ours the square the policy resizes to.
    return {k: v if v["type"] != "VISUAL" else {"type": "VISUAL"} for k, v in features.items()}


def _comparable_steps(path) -> list:
    steps = json.loads(path.read_text())["steps"]
    for step in steps:
        cfg = step.get("config", {})
        cfg.pop("eps", None)  # eps 0 with eps folded into the statistics (lerobot_processors.py)
        if step["registry_name"] == "pi05_prepare_state_tokenizer_processor_step":
            cfg.pop("max_state_dim", None)  # ours names it; lerobot 0.4.4 saves {} and reloads 32 (lerobot_processors.py)
        if "features" in cfg:
            cfg["features"] = _visual_shapes_dropped(cfg["features"])
    return steps


@pytest.mark.parametrize("kind", KINDS)
def test_files_are_the_ones_lerobot_writes(kind, tmp_path):
    assert export(ours(kind, tmp_path), tmp_path / "lerobot") == 0
    out, ref = tmp_path / "lerobot", fixture(kind) / "checkpoint"
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        assert _comparable_steps(out / name) == _comparable_steps(ref / name)
        for step in json.loads((out / name).read_text())["steps"]:
            if "state_file" in step:  # lerobot's `<feature>.<stat>` keys for the modes in norm_map
                keys = set(load_file(str(out / step["state_file"])))
                needs = {"MEAN_STD": ("mean", "std"), "QUANTILES": ("q01", "q99"), "MIN_MAX": ("min", "max")}
                mode = step["config"]["norm_map"]["ACTION"]
                assert keys == {f"{f}.{s}" for f in ("observation.state", "action") for s in needs[mode]}
    config, ref_config = (json.loads((d / "config.json").read_text()) for d in (out, ref))
    assert set(config) <= set(ref_config), "only fields lerobot's config class declares (draccus refuses others)"
    if kind == "pi05":  # the state prompt pads to the policy's max_state_dim once lerobot reloads it, not to 32
        steps = json.loads((out / "policy_preprocessor.json").read_text())["steps"]
        prompt = next(s for s in steps if s["registry_name"] == "pi05_prepare_state_tokenizer_processor_step")
        assert prompt["config"] == {"max_state_dim": config["max_state_dim"]} and config["max_state_dim"] != 32
    config["input_features"] = _visual_shapes_dropped(config["input_features"])
    ref_config["input_features"] = _visual_shapes_dropped(ref_config["input_features"])
    assert {k: ref_config[k] for k in config} == config
    with safe_open(str(out / "model.safetensors"), "pt") as a, safe_open(str(ref / "model.safetensors"), "pt") as b:
        shapes = {k: a.get_slice(k).get_shape() for k in a.keys()}
        ref_shapes = {k: b.get_slice(k).get_shape() for k in b.keys()}
    tied = {"model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"} if kind != "smolvla" else set()
    assert set(shapes) == set(ref_shapes) | tied  # lerobot's strict load: every tensor its model holds
    assert all(shapes[k] == v for k, v in ref_shapes.items())
    assert (out / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.parametrize("kind, why", [("state_flow", "state-only flow policy"), ("steered", "export its base")])
def test_types_lerobot_has_no_equivalent_of_are_refused(kind, why, tmp_path, capsys):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text(json.dumps({"type": kind}))
    assert export(tmp_path / "ck", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"policy type {kind!r}" in err and why in err and "flow_vla" in err and "flow_vla_smolvla" in err
    assert not (tmp_path / "out").exists()


def test_a_minilm_flow_vla_is_refused_naming_the_field():
    from vla.policy.checkpoint import CheckpointError
    from vla.policy.config import PolicyConfig
    from vla.policy.foreign.lerobot_export_config import pi0_kind

    with pytest.raises(CheckpointError, match="language 'minilm'"):
        pi0_kind(PolicyConfig(preset="pi0"), custom_sizes=False)


@pytest.mark.parametrize("kind, field", [("pi0", "prompt_clean"), ("pi05", "prompt_state_unpadded"),
                                         ("pi0", "image_feature_scale")])
def test_openpi_prompt_and_stock_image_scale_are_refused(kind, field):
    """lerobot tokenizes pi0 tasks as given, pads pi0.5's prompt state, and leaves image tokens unscaled."""
    from vla.policy.checkpoint import CheckpointError
    from vla.policy.foreign.lerobot_export_config import pi0_kind

    config = load_reference(fixture(kind)).config
    assert pi0_kind(config, custom_sizes=True) == kind
    setattr(config, field, True)
    with pytest.raises(CheckpointError, match=field):
        pi0_kind(config, custom_sizes=True)


def test_a_bottleneck_is_refused_naming_the_field():
    """lerobot's pi0 has no token to decode ZPRL's bottleneck into."""
    from vla.policy.checkpoint import CheckpointError
    from vla.policy.foreign.lerobot_export_config import pi0_kind

    config = load_reference(fixture("pi0")).config
    config.vib_dim = 16
    with pytest.raises(CheckpointError, match="vib_dim"):
        pi0_kind(config, custom_sizes=True)


def test_sizes_lerobot_cannot_build_are_refused_without_custom_sizes(tmp_path, capsys):
    assert main(["export", "--policy", str(ours("pi0", tmp_path)), "--output", str(tmp_path / "out")]) == 2
    assert "--custom_sizes=true" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    src, out = ours("smolvla", tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export(src, out) == 2
    assert "--overwrite=true" in capsys.readouterr().err and (out / "keep.txt").is_file()
    assert export(src, out, "--overwrite=true") == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert not list(tmp_path.glob(".out.*"))  # no temporary directory left behind


@requires_lerobot
@pytest.mark.parametrize("kind", KINDS)
def test_lerobot_loads_the_export(kind, tmp_path):
    """lerobot's own from_pretrained + processor pipelines on the export give our actions."""
    assert export(ours(kind, tmp_path), tmp_path / "lerobot") == 0
    run = subprocess.run([LEROBOT_PYTHON, str(REPO / "scripts" / "check_lerobot_export.py"), str(tmp_path / "lerobot"),
                          str(fixture(kind)), str(tmp_path / "actions.safetensors"), "--kind", kind],
                         env=lerobot_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    theirs = load_file(str(tmp_path / "actions.safetensors"))["actions"]
    mine = actions(load_policy(tmp_path / "lerobot"), kind)
    assert theirs.shape == mine.shape and (theirs - mine).abs().max() < 1e-5


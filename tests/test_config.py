from pathlib import Path

import pytest

from vla.config import (CollectConfig, ConfigError, EvalConfig, QuickstartConfig, RLConfig, TrainConfig,
                        WorldModelConfig, parse_config, write_resolved_config)
from vla.policy.config import PolicyConfig

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"collect": CollectConfig, "train": TrainConfig, "eval": EvalConfig, "policy": PolicyConfig, "rl": RLConfig,
         "world_model": WorldModelConfig}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*/*.yaml")) + sorted((ROOT / "configs").glob("quickstart*.yaml")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_parses(path):
    if path.parent.name == "robot":
        from vla.real_robot.robot_config import load_robot_config

        load_robot_config(path)
        return
    cls = QuickstartConfig if path.name.startswith("quickstart") else KINDS[path.parent.name]
    cfg = parse_config(cls, ["--config", str(path)])
    if path.name == "quickstart_state.yaml":  # its RL phase is the filtered-BC learner, not the default GRPO
        assert cfg.rl.algo == "filtered_bc" and cfg.rl.iterations > 0


def test_overrides_win_over_the_file(tmp_path):
    cfg = parse_config(QuickstartConfig, ["--config", str(ROOT / "configs/quickstart.yaml"), "--train.steps=7",
                                          "--train.policy.depth=3"])
    assert cfg.train.steps == 7 and cfg.train.policy.depth == 3 and cfg.train.policy.width == 128


def test_unknown_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 10\npolicy:\n  presett: tiny\n")
    with pytest.raises(ConfigError) as err:
        parse_config(TrainConfig, ["--config", str(bad)])
    assert "presett" in str(err.value) and str(bad) in str(err.value)


def test_malformed_value_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: many\n")
    with pytest.raises(ConfigError, match="steps"):
        parse_config(TrainConfig, ["--config", str(bad)])


def test_bad_preset_and_missing_file():
    with pytest.raises(ConfigError, match="unknown preset"):
        parse_config(TrainConfig, ["--policy.preset=enormous"])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(TrainConfig, ["--config", "nope.yaml"])


def test_resolved_config_round_trips(tmp_path):
    cfg = parse_config(QuickstartConfig, ["--train.steps=11"])
    path = write_resolved_config(cfg, tmp_path)
    again = parse_config(QuickstartConfig, ["--config", str(path)])
    assert again == cfg


@pytest.mark.parametrize("command", [["eval"], ["rl"], ["rl", "--algo=noise"]], ids=" ".join)
def test_envs_per_worker_below_one_is_refused_naming_the_flag(command, tmp_path, capsys):
    from vla.cli import main

    out = tmp_path / "out"
    assert main([*command, "--envs_per_worker=0", f"--output_dir={out}"]) == 2
    assert "--envs_per_worker must be >= 1, got 0" in capsys.readouterr().err
    assert not out.exists()  # refused before anything started

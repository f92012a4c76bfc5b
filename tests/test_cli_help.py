"""`vla <command> --help` is help: it exits 0, names the command, describes every option with its
default, lists each option once, and answers without importing the heavy stack."""

import subprocess
import sys

import pytest

import vla.config
from vla.cli import COMMANDS, main, usage
from vla.cli_help import options

ALL = [*COMMANDS, "bench"]


@pytest.mark.parametrize("command", ALL)
def test_help_exits_zero_and_names_the_command(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vla {command}")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_a_description_and_a_default_and_appears_once(command, capsys):
    found = options(getattr(vla.config, COMMANDS[command].config))
    flags = [o.flag for o in found]
    assert len(flags) == len(set(flags)), "an option is listed twice"
    assert [o.flag for o in found if not o.description] == []
    main([command, "-h"])
    out = capsys.readouterr().out
    for o in found:
        assert f"{o.flag} " in out and "(default: " in out
    assert out.count("(default: ") == len(found)


def test_top_level_usage_lists_each_command_once():
    listed = [line.split()[0] for line in usage().splitlines() if line.startswith("  ")]
    assert listed == ALL


def test_help_does_not_import_torch():
    code = ("import sys; from vla.cli import main\n"
            "for c in ['train', 'eval', 'rl', 'collect', 'quickstart']: assert main([c, '--help']) == 0\n"
            "heavy = [m for m in ('torch', 'transformers', 'mujoco', 'robosuite') if m in sys.modules]\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_help_and_documented_config_flag_agree(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("n_episodes: 3\n")
    parsed = vla.config.parse_config(vla.config.EvalConfig, ["--config", str(config)], command="eval")
    assert parsed.n_episodes == 3
    main(["eval", "--help"])
    assert "--config FILE.yaml" in capsys.readouterr().out

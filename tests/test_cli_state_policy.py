"""The state policy through the real CLI on a real robosuite Lift: collect (no cameras), train, eval, RL."""

import json

import numpy as np
import pytest

from vla.cli import main
from vla.data import LeRobotDataset, LeRobotDatasetWriter


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    assert main(["collect", f"--output_dir={root / 'demos'}", "--num_episodes=1", "--env.cameras=[]",
                 "--env.max_episode_steps=60"]) == 0
    assert main(["train", f"--dataset={root / 'demos'}", f"--output_dir={root / 'train'}", "--policy.type=state_flow",
                 "--policy.hidden_dim=32", "--steps=20", "--batch_size=8"]) == 0
    return root


def test_dataset_holds_low_dimensional_observations(trained):
    dataset = LeRobotDataset(trained / "demos")
    assert dataset.camera_keys == []
    assert dataset.features["observation.environment_state"]["shape"] == [10]  # Lift's cube pose and offset
    assert dataset[0]["observation.environment_state"].shape == (10,)


def test_eval_and_rl_run_on_the_state_policy(trained):
    policy = trained / "train" / "policy"
    assert json.loads((policy / "config.json").read_text())["type"] == "state_flow"
    # Both envs in one worker process (the lock-step path), the video's renderer included.
    assert main(["eval", f"--policy={policy}", f"--output_dir={trained / 'eval'}", "--n_episodes=2", "--n_envs=2",
                 "--envs_per_worker=2", "--n_videos=1", "--env.max_episode_steps=24"]) == 0
    info = json.loads((trained / "eval" / "eval_info.json").read_text())
    assert len(info["per_episode"]) == 2 and len(info["video_paths"]) == 1  # videos render although the policy sees none
    assert main(["rl", f"--policy={policy}", f"--output_dir={trained / 'rl'}", "--iterations=1", "--n_groups=1",
                 "--group_size=2", "--n_envs=2", "--envs_per_worker=2", "--eval.n_episodes=2",
                 "--env.max_episode_steps=24"]) == 0
    assert (trained / "rl" / "policy" / "model.safetensors").is_file()


def test_filtered_bc_runs_on_the_state_policy_with_its_demos(trained):
    import torch

    from vla.policy.registry import load_policy
    from vla.rl.filtered_bc import DemoFrames

    policy = trained / "train" / "policy"
    assert main(["rl", "--algo=filtered_bc", f"--policy={policy}", f"--demos={trained / 'demos'}",
                 "--sampling.mode=ode", f"--output_dir={trained / 'fbc'}", "--iterations=1", "--n_groups=2",
                 "--group_size=1", "--n_envs=1", "--eval.n_episodes=0", "--env.max_episode_steps=24"]) == 0
    assert (trained / "fbc" / "policy" / "model.safetensors").is_file()  # wiring only: 24 steps rarely succeed
    # the demo frames come as batches the state policy trains on
    model = load_policy(policy)
    demos = DemoFrames(str(trained / "demos"), model)
    batch = demos.sample(3, ["observation.state", "observation.environment_state"], torch.Generator().manual_seed(0))
    assert batch["action"].shape == (3, model.config.chunk_size, 7) and len(batch["task"]) == 3
    loss, _ = model(batch)
    assert torch.isfinite(loss)


def test_state_policy_refuses_a_dataset_without_object_state(tmp_path, capsys):
    features = {"observation.state": {"dtype": "float32", "shape": [8], "names": None},
                "action": {"dtype": "float32", "shape": [7], "names": None}}
    with LeRobotDatasetWriter(tmp_path / "d", fps=20, robot_type="panda", features=features) as writer:
        for _ in range(3):
            writer.add_frame({"observation.state": np.zeros(8, np.float32), "action": np.zeros(7, np.float32)},
                             task="lift the red cube")
        writer.save_episode()
    assert main(["train", f"--dataset={tmp_path / 'd'}", f"--output_dir={tmp_path / 't'}",
                 "--policy.type=state_flow"]) == 2
    assert "observation.environment_state" in capsys.readouterr().err
    assert main(["train", f"--dataset={tmp_path / 'd'}", "--policy.type=mlp"]) == 2
    assert "valid types: flow_vla, state_flow" in capsys.readouterr().err

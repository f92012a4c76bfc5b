"""LAPO through the real CLI on robosuite Lift: the warm-up SFT of a thinking state policy, one iteration of
`vla rl --algo lapo`, and the refusals (a policy that does not think, inconsistent candidate lengths)."""

import json

import pytest

from tests.policy.helpers import make_state_policy
from vla.cli import main


@pytest.fixture(scope="module")
def warmed_up(tmp_path_factory):
    root = tmp_path_factory.mktemp("lapo")
    assert main(["collect", f"--output_dir={root / 'demos'}", "--num_episodes=1", "--env.cameras=[]",
                 "--env.max_episode_steps=60"]) == 0
    assert main(["train", f"--dataset={root / 'demos'}", f"--output_dir={root / 'train'}", "--policy.type=state_flow",
                 "--policy.latent_reasoning=true", "--policy.hidden_dim=32", "--steps=10", "--batch_size=8",
                 "--log_every=1"]) == 0
    return root


def test_warm_up_trains_the_thinking_and_rl_lapo_runs_one_iteration(warmed_up):
    policy = warmed_up / "train" / "policy"
    config = json.loads((policy / "config.json").read_text())
    assert config["latent_reasoning"] and config["latent_lengths"] == [2, 4, 6, 8]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(warmed_up / "train" / "tb"))
    events.Reload()
    assert {"train/flow_loss", "train/end_loss", "train/latent_loss"} <= set(events.Tags()["scalars"])
    out = warmed_up / "rl"
    assert main(["rl", "--algo=lapo", f"--policy={policy}", f"--output_dir={out}", "--iterations=1", "--n_groups=1",
                 "--group_size=2", "--n_envs=2", "--envs_per_worker=2", "--eval.n_episodes=1",
                 "--env.max_episode_steps=16"]) == 0
    record = json.loads((out / "history.json").read_text())["history"][0]
    assert sum(record[f"length_share_{n}"] for n in (2, 4, 6, 8)) == pytest.approx(1.0)
    assert record["think_ms_per_chunk"] > 0 and "clip_fraction_latent" in record
    assert (out / "policy" / "model.safetensors").is_file() and (out / "policy" / "value_head.safetensors").is_file()


def test_refusals(tmp_path, capsys, warmed_up):
    plain = tmp_path / "plain"
    make_state_policy(seed=0).save_pretrained(plain)
    assert main(["rl", "--algo=lapo", f"--policy={plain}", f"--output_dir={tmp_path / 'rl'}"]) == 2
    err = capsys.readouterr().err
    assert "has none" in err and "vla train --policy.type=state_flow --policy.latent_reasoning=true" in err
    assert main(["train", f"--dataset={warmed_up / 'demos'}", f"--output_dir={tmp_path / 't'}",
                 "--policy.type=state_flow", "--policy.latent_reasoning=true", "--policy.latent_lengths=[2,5]"]) == 2
    assert "positive multiple of policy.latent_group=2" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()  # refused before training started


def test_vla_warm_up_regresses_future_frames(tmp_path):
    from tests.data.helpers import random_episodes, write_dataset

    data = write_dataset(tmp_path / "d", random_episodes(seed=0, lengths=(6, 5)))
    assert main(["train", f"--dataset={data}", f"--output_dir={tmp_path / 't'}", "--policy.latent_reasoning=true",
                 "--policy.cameras=[agentview]", "--policy.vision_layers=1", "--policy.depth=2",
                 "--policy.chunk_size=4", "--policy.n_action_steps=2", "--steps=3", "--batch_size=2",
                 "--log_every=1", "--image_shift=0"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "t" / "tb"))
    events.Reload()
    assert "train/latent_loss" in events.Tags()["scalars"]
    config = json.loads((tmp_path / "t" / "policy" / "config.json").read_text())
    assert config["type"] == "flow_vla" and config["latent_reasoning"]


def test_fine_tuning_a_thinking_vla_keeps_its_warm_up_targets(tmp_path):
    # --policy.init: the checkpoint's latent reasoning (not the command line's defaults) decides which future
    # frames the batches carry; without them the latent term silently left the loss
    from tests.data.helpers import random_episodes, write_dataset

    data = write_dataset(tmp_path / "d", random_episodes(seed=0, lengths=(6, 5)))
    assert main(["train", f"--dataset={data}", f"--output_dir={tmp_path / 't'}", "--policy.latent_reasoning=true",
                 "--policy.latent_lengths=[2,4]", "--policy.latent_stride=1", "--policy.cameras=[agentview]",
                 "--policy.vision_layers=1", "--policy.depth=2", "--policy.chunk_size=4", "--policy.n_action_steps=2",
                 "--steps=1", "--batch_size=2", "--image_shift=0"]) == 0
    assert main(["train", f"--dataset={data}", f"--output_dir={tmp_path / 'ft'}",
                 f"--policy.init={tmp_path / 't' / 'policy'}", "--steps=2", "--batch_size=2", "--log_every=1",
                 "--image_shift=0"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "ft" / "tb"))
    events.Reload()
    assert "train/latent_loss" in events.Tags()["scalars"]
    config = json.loads((tmp_path / "ft" / "policy" / "config.json").read_text())
    assert config["latent_reasoning"] and config["latent_stride"] == 1 and config["latent_lengths"] == [2, 4]

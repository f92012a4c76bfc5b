"""`vla rl --algo srpo` end to end: the loop with the toy env (logs, exact resume, refusals) and the real
CLI on robosuite Lift with a state policy, whose env renders SRPO's camera only at chunk boundaries."""

import json

import numpy as np
import pytest
import torch

from tests.policy.helpers import make_policy, make_state_policy
from tests.rl.test_rl_trainer import TIMING_KEYS, final_state, make_config, run
from vla.config import ConfigError

SRPO = {"dynamic_sampling": False, "srpo.n_frames": 4}


@pytest.fixture(scope="module")
def vla_policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("srpo") / "policy"
    make_policy(seed=0).save_pretrained(path)
    return path


def history(out):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS | {"reward_s"}}
            for h in json.loads((out / "history.json").read_text())["history"]]


def test_srpo_trains_logs_and_resumes_exactly(vla_policy, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(make_config(vla_policy, straight, "srpo", **SRPO))
    run(make_config(vla_policy, resumed, "srpo", stop_after=2, **SRPO))
    run(make_config(vla_policy, resumed, "srpo", resume=True, **SRPO))
    h = history(straight)
    assert h == history(resumed)
    (w1, _), (w2, _) = final_state(straight), final_state(resumed)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    for key in ("progress_fallback", "success_clusters", "no_success_tasks", "kept_group_fraction", "policy_loss"):
        assert all(key in r for r in h), key
    graded = [r for r in h if r.get("failure_rewards")]
    assert graded, "the toy task should give mixed outcomes"
    for r in graded:
        assert all(0.00401 < g < 0.59599 for g in r["failure_rewards"])
        assert r["failure_reward_min"] == min(r["failure_rewards"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight / "tb")).Reload()
    assert "train/failure_rewards" in events.Tags()["histograms"]
    assert "train/success_clusters" in events.Tags()["scalars"]


def test_bad_srpo_configs_are_refused_by_name(vla_policy, tmp_path):
    with pytest.raises(ConfigError, match="--reward=shaped: SRPO makes its own reward"):
        run(make_config(vla_policy, tmp_path / "a", "srpo", reward="shaped"))
    with pytest.raises(ConfigError, match="--srpo.encoder=video needs --srpo.encoder_path"):
        run(make_config(vla_policy, tmp_path / "b", "srpo", **{"srpo.encoder": "video"}))
    with pytest.raises(ConfigError, match="--srpo.encoder: 'dino' is not one of"):
        run(make_config(vla_policy, tmp_path / "c", "srpo", **{"srpo.encoder": "dino"}))
    with pytest.raises(ConfigError, match="--srpo.n_frames: SRPO's options; --algo grpo does not use them"):
        run(make_config(vla_policy, tmp_path / "d", "grpo", **{"srpo.n_frames": 8}))
    with pytest.raises(ConfigError, match="--group_size must be >= 2 for SRPO"):
        run(make_config(vla_policy, tmp_path / "e", "srpo", group_size=1))
    state = tmp_path / "state"
    make_state_policy().save_pretrained(state)
    with pytest.raises(ConfigError, match="policy_vision needs a policy with a camera"):
        run(make_config(state, tmp_path / "f", "srpo"))


def test_cli_srpo_on_a_state_policy_with_a_trained_video_encoder(tmp_path, monkeypatch):
    """The real path: `vla train-world-model` on a dataset with frames, then `vla rl --algo srpo` with it on
    a state policy in robosuite Lift (which then renders agentview at chunk boundaries, for SRPO only)."""
    from tests.data.helpers import random_episodes, write_dataset
    from vla.cli import main
    from vla.rl.rollout import RolloutEngine

    data = write_dataset(tmp_path / "demos", random_episodes(seed=0, lengths=(8, 8)))
    encoder = tmp_path / "wm.safetensors"
    assert main(["train-world-model", f"--datasets=[{data}]", f"--output={encoder}", "--image_size=16", "--width=16",
                 "--clip_frames=2", "--steps=3", "--batch_size=4", "--num_threads=1"]) == 0
    policy = tmp_path / "policy"
    make_state_policy().save_pretrained(policy)  # Lift's object state, chunks of 4, 2 executed

    seen = []
    collect = RolloutEngine.collect

    def spy(self, *args, **kwargs):
        rollouts = collect(self, *args, **kwargs)
        seen.append(rollouts)
        return rollouts

    monkeypatch.setattr(RolloutEngine, "collect", spy)
    out = tmp_path / "rl"
    assert main(["rl", "--algo=srpo", f"--policy={policy}", f"--output_dir={out}", "--iterations=1", "--n_groups=1",
                 "--group_size=2", "--n_envs=2", "--envs_per_worker=2", "--eval.n_episodes=0",
                 "--env.max_episode_steps=8", "--env.image_size=32", "--srpo.encoder=video",
                 f"--srpo.encoder_path={encoder}", "--srpo.n_frames=4"]) == 0
    assert (out / "policy" / "model.safetensors").is_file()
    for t in seen[0].trajectories:  # one agentview frame per chunk boundary, the initial one included
        assert len(t.frames) == len(t.decisions) + 1 and t.frames[0].shape == (32, 32, 3)
        assert t.frames[0].std() > 0, "a rendered scene, not a blank image"
    record = json.loads((out / "history.json").read_text())["history"][0]
    assert record["progress_fallback"] == 0.0 and "kept_group_fraction" in record

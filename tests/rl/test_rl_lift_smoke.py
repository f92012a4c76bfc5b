"""One tiny RL iteration on the real robosuite Lift task (vector env workers, rendering, eval)."""

import json

import pytest

from tests.policy.helpers import make_policy
from vla.config import RLConfig
from vla.rl.trainer import train_rl

pytest.importorskip("robosuite")


@pytest.mark.timeout(120)
def test_one_grpo_iteration_on_lift(tmp_path):
    make_policy(seed=0).save_pretrained(tmp_path / "sft")
    cfg = RLConfig(algo="grpo", policy=str(tmp_path / "sft"), output_dir=str(tmp_path / "run"), iterations=1,
                   n_groups=1, group_size=2, n_envs=2, dynamic_sampling=False, minibatch_size=8)
    cfg.env.max_episode_steps = 6
    cfg.eval.n_episodes = 1
    summary = train_rl(cfg, progress=False)
    record = json.loads((tmp_path / "run" / "history.json").read_text())["history"][0]
    assert record["env_steps"] == 12  # two 6-step episodes (the untrained policy cannot lift in 6 steps)
    assert record["decisions"] == 6 and record["skipped_update"] == 0
    assert record["logprob_s"] > 0 and record["update_s"] > 0
    assert summary["eval_pc_success"] == 0.0
    assert (tmp_path / "run" / "policy" / "model.safetensors").is_file()

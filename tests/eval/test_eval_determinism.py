"""An episode's result depends on its seed alone: not on the worker count or envs per worker, the process's
global RNG, or the policy having been loaded anew. Every RL comparison in the project rests on this."""

import json

import pytest
import torch

from vla.cli import main


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs")
    assert main(["quickstart", f"--output_dir={out}", "--collect.num_episodes=1", "--collect.env.max_episode_steps=60",
                 "--train.steps=3", "--train.batch_size=4", "--train.policy.depth=1", "--train.policy.vision_layers=1",
                 "--eval.n_episodes=1", "--eval.n_videos=0", "--eval.n_envs=1"]) == 0
    return out / "train" / "policy"


def _episodes(policy_dir, out, n_envs, *extra):
    # The staged dense reward moves with every action, so any change in an episode shows in it.
    assert main(["eval", f"--policy={policy_dir}", f"--output_dir={out}", "--n_episodes=3", f"--n_envs={n_envs}",
                 "--n_videos=0", "--env.max_episode_steps=32", "--env.reward_shaping=true", *extra]) == 0
    rows = json.loads((out / "eval_info.json").read_text())["per_episode"]
    return [(r["episode_ix"], r["seed"], r["sum_reward"], r["max_reward"], r["steps"], r["success"]) for r in rows]


def test_same_episodes_across_worker_counts_and_global_rng(policy_dir, tmp_path):
    torch.manual_seed(1)
    one_worker = _episodes(policy_dir, tmp_path / "a", 1)
    torch.manual_seed(2)  # the process's global RNG must not matter
    three_workers = _episodes(policy_dir, tmp_path / "b", 3)
    assert one_worker == three_workers
    assert one_worker == _episodes(policy_dir, tmp_path / "c", 3, "--envs_per_worker=3")  # one worker, three envs
    assert len({row[2] for row in one_worker}) == 3, "the three episodes should differ from each other"


def test_a_different_seed_gives_different_episodes(policy_dir, tmp_path):
    # Guards the test above against a policy or env that ignores its noise and seed altogether.
    base = _episodes(policy_dir, tmp_path / "a", 2)
    shifted = _episodes(policy_dir, tmp_path / "b", 2, "--seed=100003")
    assert [row[2] for row in base] != [row[2] for row in shifted]

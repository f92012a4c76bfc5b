"""`vla rl` under torchrun: 2 gloo processes on the CPU train a tiny state policy on a real Lift like one
process does.

Design (docs/SCALING.md, "The learner on several processes"): rank 0 collects the rollouts and broadcasts
them with the generator's state; each rank computes its share of every minibatch and the gradients are
summed before each optimizer step. The 2-process run therefore sees exactly the 1-process run's batch, so
the comparison is with a plain 1-process run of the same flags:
- iteration 0's rollout statistics are equal exactly (same weights, same generator, same env seeds);
- the update statistics are the mean over the ranks of each rank's shares (equal shares here: 12 decisions
  per iteration in minibatches of 8 and 4), equal to the 1-process ones up to float summation order;
- iteration 0 stops at target_kl after the same optimizer step (both ranks compare the whole minibatch's KL);
- iteration 1's rollouts and the final weights differ only by that float rounding (a sum of two half
  gradients instead of one), carried through Adam; bounded far below how far training moved the weights.
The flags switch on the two per-minibatch quantities that the sharding must keep rank-independent (the
velocity anchor's random steps, the target_kl stop)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.policy.helpers import make_state_policy
from vla.cli import main

pytest.importorskip("robosuite")

TIMINGS = ("_s",)
FLAGS = ["--iterations=2", "--n_groups=1", "--group_size=2", "--n_envs=2", "--env.max_episode_steps=12",
         "--minibatch_size=8", "--epochs=2", "--dynamic_sampling=false", "--reward=shaped", "--anchor_coef=1.0", "--target_kl=10.0",
         "--lr=0.003", "--eval.n_episodes=1", "--num_threads=1"]
EXACT = ("iteration", "env_steps", "lr", "decisions", "episode_steps", "success_rate", "optimizer_steps",
         "kl_stopped", "skipped_update", "kept_decisions", "policy_version")


def history(run_dir):
    records = json.loads((run_dir / "history.json").read_text())["history"]
    return [{k: v for k, v in r.items() if not k.endswith(TIMINGS)} for r in records]


def files(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and "tb" not in p.parts)


@pytest.mark.timeout(300)
def test_vla_rl_under_torchrun_trains_like_one_process(tmp_path):
    make_state_policy(seed=0).save_pretrained(tmp_path / "sft")
    common = ["rl", f"--policy={tmp_path / 'sft'}", *FLAGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env.pop("WORLD_SIZE", None)
    # on a hang (a collective one rank skipped), SIGTERM: torchrun stops its ranks (killing it would orphan them)
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                            "-m", "vla.cli", *common, f"--output_dir={tmp_path / 'two'}"], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = two.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        two.terminate()
        two.communicate(timeout=60)
        raise
    assert two.returncode == 0, stdout[-3000:] + stderr[-5000:]
    assert main([*common, f"--output_dir={tmp_path / 'one'}"]) == 0

    # only rank 0 wrote: the same files as the single process (one history, one checkpoint, one policy)
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert (tmp_path / "two" / "rl_summary.json").is_file() and len(list((tmp_path / "two" / "tb").iterdir())) == 1
    one, two_hist = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(one) == len(two_hist) == 2
    for a, b in zip(one, two_hist):
        assert {k: a[k] for k in EXACT} == {k: b[k] for k in EXACT}
        assert a.keys() == b.keys() and b["optimizer_steps"] >= 2 and "velocity_anchor" in b
        for key in a.keys() - set(EXACT):  # losses, KL, grad norm, rewards, log-probs: float rounding only
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert {k: v for k, v in two_hist[0].items() if k in ("reward", "entropy", "old_log_prob")} == \
        {k: v for k, v in one[0].items() if k in ("reward", "entropy", "old_log_prob")}  # same rollouts

    assert two_hist[1]["velocity_anchor"] > 0 and two_hist[0]["reward"] > 0  # the anchor and the reward bite
    # lr 0.003 takes some minibatch past target_kl=10 in iteration 0: both ranks stopped where one process did
    assert two_hist[0]["kl_stopped"] == 1.0 and two_hist[0]["optimizer_steps"] < 4

    start = make_state_policy(seed=0).state_dict()
    w1, w2 = (load_file(tmp_path / n / "policy" / "model.safetensors") for n in ("one", "two"))
    floats = [k for k in w1 if w1[k].is_floating_point() and k in start]
    moved = max(float((w1[k] - start[k]).abs().max()) for k in floats)
    gap = max(float((w2[k] - w1[k]).abs().max()) for k in floats)
    assert moved > 1e-3 and gap < 1e-4 * moved, (gap, moved)


def test_off_policy_steering_refuses_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["rl", "--algo=noise", f"--policy={tmp_path / 'sft'}", f"--output_dir={tmp_path / 'run'}"]) == 2
    assert "do not run data-parallel" in capsys.readouterr().err

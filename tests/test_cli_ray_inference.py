"""`vla rl --backend ray --ray_inference worker` end to end on a real Lift with a tiny state policy: the Ray
actors hold the policy and sample, the driver pushes each update's weights; the run completes, logs the
policy version and staleness of its data, and the same seed gives the same history. Bad placements are
refused before anything starts."""

import json

import pytest

from tests.policy.helpers import make_state_policy
from vla.cli import main

TIMINGS = ("_s",)  # wall-clock fields differ from run to run


def test_ray_inference_worker_is_refused_with_the_local_backend(tmp_path, capsys):
    make_state_policy(seed=0).save_pretrained(tmp_path / "sft")
    base = ["rl", f"--policy={tmp_path / 'sft'}", f"--output_dir={tmp_path / 'run'}"]
    assert main([*base, "--ray_inference=worker"]) == 2
    err = capsys.readouterr().err
    assert "--ray_inference worker needs --backend ray" in err
    assert main([*base, "--backend=ray", "--ray_inference=gpu"]) == 2
    assert "--ray_inference: 'gpu' is not one of driver, worker" in capsys.readouterr().err
    assert main([*base, "--ray_gpus_per_worker=0.5"]) == 2
    assert "--ray_gpus_per_worker needs --backend ray" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(400)
def test_vla_rl_with_rollout_workers_completes_logs_versions_and_repeats(tmp_path):
    ray = pytest.importorskip("ray")
    make_state_policy(seed=0).save_pretrained(tmp_path / "sft")

    def run(name):
        args = ["rl", f"--policy={tmp_path / 'sft'}", f"--output_dir={tmp_path / name}", "--iterations=2",
                "--n_groups=1", "--group_size=2", "--n_envs=2", "--env.max_episode_steps=12", "--minibatch_size=8",
                "--dynamic_sampling=false", "--eval.n_episodes=1", "--num_threads=1", "--backend=ray",
                "--ray_inference=worker", "--lost_episodes=replay"]
        assert main(args) == 0
        return json.loads((tmp_path / name / "history.json").read_text())["history"]

    first = run("a")
    assert not ray.is_initialized()  # the run stopped the Ray instance it started
    assert len(first) == 2
    assert [r["policy_version"] for r in first] == [0.0, 1.0] and [r["staleness_max"] for r in first] == [0.0, 0.0]
    assert "weight_push_s" in first[0] and "weight_push_s" not in first[1]  # no push after the last update
    assert all(r["optimizer_steps"] >= 1 and r["env_steps"] > 0 for r in first)
    summary = json.loads((tmp_path / "a" / "rl_summary.json").read_text())
    assert summary["iterations"] == 2 and "eval_pc_success" in summary
    second = run("b")
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith(TIMINGS)} for r in h]  # noqa: E731
    assert strip(second) == strip(first)

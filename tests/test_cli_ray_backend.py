"""`vla rl --backend ray` end to end on a real Lift with a tiny state policy: it starts (and stops) its
own local Ray instance and writes the same history as the local backend with the same seed."""

import json

import pytest

ray = pytest.importorskip("ray")

from tests.policy.helpers import make_state_policy  # noqa: E402
from vla.cli import main  # noqa: E402

TIMINGS = ("_s",)  # wall-clock fields differ from run to run


def run(tmp_path, name, *extra):
    args = ["rl", f"--policy={tmp_path / 'sft'}", f"--output_dir={tmp_path / name}", "--iterations=2", "--n_groups=1",
            "--group_size=2", "--n_envs=2", "--env.max_episode_steps=12", "--minibatch_size=8",
            "--dynamic_sampling=false", "--eval.n_episodes=1", "--num_threads=1", *extra]
    assert main(args) == 0
    history = json.loads((tmp_path / name / "history.json").read_text())["history"]
    return [{k: v for k, v in record.items() if not k.endswith(TIMINGS)} for record in history]


@pytest.mark.timeout(300)
def test_vla_rl_backend_ray_matches_the_local_backend(tmp_path):
    make_state_policy(seed=0).save_pretrained(tmp_path / "sft")
    local = run(tmp_path, "local")
    remote = run(tmp_path, "ray", "--backend=ray", "--lost_episodes=replay")
    assert not ray.is_initialized()  # the run stopped the Ray instance it started
    assert len(remote) == 2 and remote == local
    assert [r["staleness_max"] for r in remote] == [0.0, 0.0] and [r["policy_version"] for r in remote] == [0.0, 1.0]
    local_eval = json.loads((tmp_path / "local" / "rl_summary.json").read_text())
    ray_eval = json.loads((tmp_path / "ray" / "rl_summary.json").read_text())
    assert ray_eval["eval_pc_success"] == local_eval["eval_pc_success"]


def test_vla_rl_names_an_unreachable_ray_address(tmp_path, capsys):
    make_state_policy(seed=0).save_pretrained(tmp_path / "sft")
    assert main(["rl", f"--policy={tmp_path / 'sft'}", f"--output_dir={tmp_path / 'run'}", "--backend=ray",
                 "--ray_address=127.0.0.1:1", "--eval.n_episodes=0"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at --ray_address 127.0.0.1:1" in err and "refused" in err
    assert main(["rl", f"--policy={tmp_path / 'sft'}", "--ray_address=auto"]) == 2
    assert "--ray_address needs --backend ray" in capsys.readouterr().err

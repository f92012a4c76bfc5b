"""A loaded pi0 / pi0.5-layout checkpoint runs where our own policies run: Lift observations,
RL's stochastic sampler with exact log-probs, and `vla eval` (which loads it by path)."""

import json

import pytest
import torch

from tests.policy.pretrained_helpers import lift_checkpoint
from vla.policy.flow_vla import FlowVLAPolicy
from vla.policy.observation import observations_to_batch
from vla.policy.sampling import chain_log_prob, sample_chain

pytest.importorskip("robosuite")


@pytest.fixture(scope="module")
def lift_obs():
    from vla.sim.robosuite_env import RobosuiteEnv

    env = RobosuiteEnv("lift", cameras=("agentview",), image_size=64, max_episode_steps=10, seed=0)
    try:
        obs, _ = env.reset(seed=0)
        yield env, obs
    finally:
        env.close()


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_loaded_checkpoint_acts_and_samples_on_lift(tmp_path, lift_obs, kind):
    env, obs = lift_obs
    policy = FlowVLAPolicy.from_pretrained(lift_checkpoint(kind, tmp_path / "ck"))  # the path `vla rl/eval` take
    batch = observations_to_batch([obs, obs], policy.config.cameras)
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (2, policy.config.chunk_size, 7) and chunk.isfinite().all()
    env.step(chunk[0, 0].numpy())
    # RL: Flow-SDE chain in the env's 7 action dims, log-prob recomputed with gradients.
    g = torch.Generator().manual_seed(0)
    sample = sample_chain(policy, batch, mode="sde", sde_mode="joint", noise_level=0.5, generator=g)
    assert sample.chain.shape == (2, policy.config.num_inference_steps + 1, policy.config.chunk_size, 7)
    lp = chain_log_prob(policy, batch, sample.chain, sample.step_mask, mode="sde", noise_level=0.5)
    assert torch.allclose(lp, sample.log_prob, rtol=1e-4, atol=1e-3)
    lp.sum().backward()
    assert policy.action_out_proj.weight.grad.abs().sum() > 0


def test_vla_eval_runs_a_lerobot_checkpoint(tmp_path):
    from vla.config import EnvConfig, EvalConfig
    from vla.eval.evaluate import run_eval

    ck = lift_checkpoint("pi0", tmp_path / "ck")
    cfg = EvalConfig(policy=str(ck), output_dir=str(tmp_path / "eval"), n_episodes=1, n_envs=1, n_videos=0,
                     env=EnvConfig(max_episode_steps=6), num_threads=1)
    run_eval(cfg, progress=False)
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert len(info["per_episode"]) == 1 and "pc_success" in info["aggregated"]


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_vla_rl_runs_a_lerobot_checkpoint_on_lift(tmp_path, algo):
    from vla.config import RLConfig
    from vla.rl.trainer import train_rl

    ck = lift_checkpoint("pi0", tmp_path / "ck")
    cfg = RLConfig(algo=algo, policy=str(ck), output_dir=str(tmp_path / "rl"), iterations=1, n_groups=1,
                   group_size=2, n_envs=2, epochs=1, minibatch_size=4, dynamic_sampling=False, kl_coef=0.01)
    cfg.env.max_episode_steps = 6
    cfg.eval.n_episodes = 0
    train_rl(cfg, progress=False)
    # Six-step Lift episodes never succeed, so every advantage is zero and the weights cannot move;
    # what this pins down is that rollouts, log-probs and the update run on the loaded checkpoint
    # (test_loaded_checkpoint_acts_and_samples_on_lift shows the gradient reaches the weights).
    record = json.loads((tmp_path / "rl" / "history.json").read_text())["history"][0]
    assert record["env_steps"] == 12 and record["optimizer_steps"] >= 1
    assert torch.isfinite(torch.tensor([record["old_log_prob"], record["entropy"]])).all()
    after = FlowVLAPolicy.from_pretrained(tmp_path / "rl" / "checkpoints" / "last" / "policy")
    before = FlowVLAPolicy.from_pretrained(ck)
    assert after.config.language == "tokens" and after.config.cameras == ["agentview"]
    assert torch.equal(after.language.embed_tokens.weight, before.language.embed_tokens.weight)

"""A loaded lerobot SmolVLA checkpoint runs where our own policies run: Lift observations, RL's
stochastic sampler with exact log-probs, `vla eval`, `vla rl` and `vla train --policy.init`."""

import json

import pytest
import torch

from tests.policy.pretrained_helpers import lift_checkpoint
from vla.policy.flow_vla import FlowVLAPolicy
from vla.policy.observation import observations_to_batch
from vla.policy.sampling import NoiseHead, chain_log_prob, sample_chain
from vla.policy.smolvla import SmolVLAPolicy

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


def test_loaded_smolvla_acts_and_samples_on_lift(tmp_path, lift_obs):
    env, obs = lift_obs
    policy = FlowVLAPolicy.from_pretrained(lift_checkpoint("smolvla", tmp_path / "ck"))  # the path `vla rl/eval` take
    assert isinstance(policy, SmolVLAPolicy)
    batch = observations_to_batch([obs, obs], policy.config.cameras)
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (2, policy.config.chunk_size, 7) and chunk.isfinite().all()
    env.step(chunk[0, 0].numpy())
    k, h = policy.config.num_inference_steps, policy.config.chunk_size
    # Flow-SDE chain in the env's 7 action dims, log-prob recomputed with gradients.
    g = torch.Generator().manual_seed(0)
    sample = sample_chain(policy, batch, mode="sde", sde_mode="joint", noise_level=0.5, generator=g)
    assert sample.chain.shape == (2, k + 1, h, 7) and sample.pooled.shape == (2, policy.config.width)
    lp = chain_log_prob(policy, batch, sample.chain, sample.step_mask, mode="sde", noise_level=0.5)
    assert torch.allclose(lp, sample.log_prob, rtol=1e-4, atol=1e-3)
    lp.sum().backward()
    assert policy.action_out_proj.weight.grad.abs().sum() > 0
    assert policy.transformer.expert.layers[1].self_attn.k_proj.weight.grad.abs().sum() > 0  # cross-attention
    # Flow-Noise reads the expert's features (return_hidden) for its learned std.
    head = NoiseHead(policy.config.expert_width, 7)
    sample = sample_chain(policy, batch, mode="noise", sde_mode="mixed", noise_head=head, generator=g)
    lp = chain_log_prob(policy, batch, sample.chain, sample.step_mask, mode="noise", noise_head=head)
    assert torch.allclose(lp, sample.log_prob, rtol=1e-4, atol=1e-3)


def test_vla_eval_runs_a_smolvla_checkpoint(tmp_path):
    from vla.config import EnvConfig, EvalConfig
    from vla.eval.evaluate import run_eval

    ck = lift_checkpoint("smolvla", tmp_path / "ck")
    cfg = EvalConfig(policy=str(ck), output_dir=str(tmp_path / "eval"), n_episodes=1, n_envs=1, n_videos=0,
                     env=EnvConfig(max_episode_steps=6), num_threads=1)
    run_eval(cfg, progress=False)
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert len(info["per_episode"]) == 1 and "pc_success" in info["aggregated"]


def test_vla_rl_runs_a_smolvla_checkpoint_on_lift(tmp_path):
    from vla.config import RLConfig
    from vla.rl.trainer import train_rl

    ck = lift_checkpoint("smolvla", tmp_path / "ck")
    cfg = RLConfig(algo="ppo", policy=str(ck), output_dir=str(tmp_path / "rl"), iterations=1, n_groups=1,
                   group_size=2, n_envs=2, epochs=1, minibatch_size=4, dynamic_sampling=False, kl_coef=0.01)
    cfg.env.max_episode_steps = 6
    cfg.eval.n_episodes = 0
    train_rl(cfg, progress=False)
    record = json.loads((tmp_path / "rl" / "history.json").read_text())["history"][0]
    assert record["env_steps"] == 12 and record["optimizer_steps"] >= 1
    assert torch.isfinite(torch.tensor([record["old_log_prob"], record["entropy"]])).all()
    after = FlowVLAPolicy.from_pretrained(tmp_path / "rl" / "checkpoints" / "last" / "policy")
    assert isinstance(after, SmolVLAPolicy) and after.config.cameras == ["agentview"]


def test_vla_train_policy_init_smolvla(tmp_path):
    pytest.importorskip("pyarrow")
    from tests.data.helpers import random_episodes, write_dataset
    from vla.config import TrainConfig
    from vla.policy.config import PolicyConfig
    from vla.train.sft import train

    data = write_dataset(tmp_path / "ds", random_episodes(seed=1, lengths=(6, 6)))
    ck = lift_checkpoint("smolvla", tmp_path / "ck")
    cfg = TrainConfig(dataset=str(data), output_dir=str(tmp_path / "run"), steps=2, batch_size=2, warmup_steps=1,
                      save_every=0, image_shift=0, num_threads=1,
                      policy=PolicyConfig(init=str(ck), train_expert_only=True))
    train(cfg, progress=False)
    out = FlowVLAPolicy.from_pretrained(tmp_path / "run" / "policy")
    src = FlowVLAPolicy.from_pretrained(ck)
    assert isinstance(out, SmolVLAPolicy) and out.config.cameras == ["agentview"]
    # Expert trained, VLM (vision, connector, text layers, token table) frozen.
    assert torch.equal(out.transformer.vlm.layers[0].mlp.up_proj.weight, src.transformer.vlm.layers[0].mlp.up_proj.weight)
    assert torch.equal(out.multi_modal_projector.modality_projection.proj.weight,
                       src.multi_modal_projector.modality_projection.proj.weight)
    assert not torch.equal(out.transformer.expert.layers[1].self_attn.k_proj.weight,
                           src.transformer.expert.layers[1].self_attn.k_proj.weight)

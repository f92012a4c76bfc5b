"""A loaded lerobot SmolVLA checkpoint runs where our own policies run: Lift observations, RL's
stochastic sampler with exact log-probs, `vla eval`, `vla rl` and `vla train --policy.init`."""

import pytest
import torch

from tests.policy.pretrained_helpers import (act_and_sample_on_lift, check_vla_eval_runs,
                                             run_rl_on_lift, train_from_checkpoint)
from vla.policy.sampling import NoiseHead, chain_log_prob, sample_chain
from vla.policy.smolvla import SmolVLAPolicy

pytest.importorskip("robosuite")


def test_loaded_smolvla_acts_and_samples_on_lift(tmp_path, lift_obs):
    policy, batch, sample, g = act_and_sample_on_lift("smolvla", tmp_path, lift_obs)
    assert isinstance(policy, SmolVLAPolicy)
    assert sample.pooled.shape == (2, policy.config.width)
    assert policy.transformer.expert.layers[1].self_attn.k_proj.weight.grad.abs().sum() > 0  # cross-attention
    # Flow-Noise reads the expert's features (return_hidden) for its learned std.
    head = NoiseHead(policy.config.expert_width, 7)
    sample = sample_chain(policy, batch, mode="noise", sde_mode="mixed", noise_head=head, generator=g)
    lp = chain_log_prob(policy, batch, sample.chain, sample.step_mask, mode="noise", noise_head=head)
    assert torch.allclose(lp, sample.log_prob, rtol=1e-4, atol=1e-3)


def test_vla_eval_runs_a_smolvla_checkpoint(tmp_path):
    check_vla_eval_runs("smolvla", tmp_path)


def test_vla_rl_runs_a_smolvla_checkpoint_on_lift(tmp_path):
    _, after = run_rl_on_lift("smolvla", tmp_path, "ppo")
    assert isinstance(after, SmolVLAPolicy) and after.config.cameras == ["agentview"]


def test_vla_train_policy_init_smolvla(tmp_path):
    out, src = train_from_checkpoint("smolvla", tmp_path)
    assert isinstance(out, SmolVLAPolicy) and out.config.cameras == ["agentview"]
    # Expert trained, VLM (vision, connector, text layers, token table) frozen.
    assert torch.equal(out.transformer.vlm.layers[0].mlp.up_proj.weight, src.transformer.vlm.layers[0].mlp.up_proj.weight)
    assert torch.equal(out.multi_modal_projector.modality_projection.proj.weight,
                       src.multi_modal_projector.modality_projection.proj.weight)
    assert not torch.equal(out.transformer.expert.layers[1].self_attn.k_proj.weight,
                           src.transformer.expert.layers[1].self_attn.k_proj.weight)

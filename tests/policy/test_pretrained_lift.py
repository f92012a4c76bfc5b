"""A loaded pi0 / pi0.5-layout checkpoint runs where our own policies run: Lift observations,
RL's stochastic sampler with exact log-probs, and `vla eval` (which loads it by path)."""

import pytest
import torch

from tests.policy.pretrained_helpers import act_and_sample_on_lift, check_vla_eval_runs, run_rl_on_lift
from vla.policy.registry import load_policy

pytest.importorskip("robosuite")


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_loaded_checkpoint_acts_and_samples_on_lift(tmp_path, lift_obs, kind):
    act_and_sample_on_lift(kind, tmp_path, lift_obs)


def test_vla_eval_runs_a_lerobot_checkpoint(tmp_path):
    check_vla_eval_runs("pi0", tmp_path)


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_vla_rl_runs_a_lerobot_checkpoint_on_lift(tmp_path, algo):
    ck, after = run_rl_on_lift("pi0", tmp_path, algo)
    # Six-step Lift episodes never succeed, so every advantage is zero and the weights cannot move;
    # what this pins down is that rollouts, log-probs and the update run on the loaded checkpoint
    # (test_loaded_checkpoint_acts_and_samples_on_lift shows the gradient reaches the weights).
    before = load_policy(ck)
    assert after.config.language == "tokens" and after.config.cameras == ["agentview"]
    assert torch.equal(after.language.embed_tokens.weight, before.language.embed_tokens.weight)

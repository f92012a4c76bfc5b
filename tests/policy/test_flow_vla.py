import pytest
import torch

from tests.policy.helpers import make_batch, make_policy, tiny_config
from vla.policy.config import PolicyConfig
from vla.policy.flow_vla import FlowVLAPolicy


def test_loss_matches_flow_matching_definition():
    policy = make_policy()
    batch = make_batch()
    noise = torch.randn(3, 4, 7)
    t = torch.tensor([0.2, 0.5, 0.9])
    loss, _ = policy(batch, noise=noise, time=t)
    a = batch["action"]  # unit stats: normalised == raw
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * a
    cache, state_token = policy.encode_observation(batch)
    v = policy.velocity(cache, state_token, x_t, t)
    expected = (v - (noise - a)).pow(2).mean()
    torch.testing.assert_close(loss, expected)


def test_padded_actions_are_left_out_of_the_loss():
    policy = make_policy()
    batch = make_batch()
    noise, t = torch.randn(3, 4, 7), torch.full((3,), 0.5)
    batch["action_is_pad"][0, 2:] = True
    batch["action_is_pad"][1, 3:] = True
    loss, _ = policy(batch, noise=noise, time=t)
    a = batch["action"]
    x_t = 0.5 * noise + 0.5 * a
    cache, state_token = policy.encode_observation(batch)
    per_step = (policy.velocity(cache, state_token, x_t, t) - (noise - a)).pow(2).mean(-1)
    valid = ~batch["action_is_pad"]
    torch.testing.assert_close(loss, per_step[valid].mean())
    assert not torch.isclose(loss, per_step.mean())


def test_gradients_reach_vision_and_expert():
    policy = make_policy()
    loss, _ = policy(make_batch())
    loss.backward()
    assert policy.vision.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert policy.transformer.expert.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    assert policy.transformer.vlm.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    # the language encoder is frozen and not part of the module tree
    assert not any("bert" in n or "minilm" in n.lower() for n, _ in policy.named_parameters())


def test_euler_sampler_walks_time_from_one_to_zero():
    policy = make_policy(num_inference_steps=5).eval()
    seen = []

    def record(x, v, t, dt, step):
        seen.append((float(t[0]), dt, step))
        return x - dt * v

    policy.sample_actions(make_batch(b=1), step_fn=record)
    assert [round(t, 6) for t, _, _ in seen] == [1.0, 0.8, 0.6, 0.4, 0.2]
    assert all(dt == pytest.approx(0.2) for _, dt, _ in seen)


def test_batch_elements_are_independent_with_padded_instructions():
    policy = make_policy().eval()
    tasks = ["lift the red cube", "pick up the small red cube from the wooden table and lift it high", "lift"]
    batch = make_batch(b=3, tasks=tasks)
    noise = torch.randn(3, 4, 7)
    together = policy.predict_action_chunk(batch, noise=noise)
    for i in range(3):
        single = {k: (v[i : i + 1] if torch.is_tensor(v) else v[i : i + 1]) for k, v in batch.items()}
        alone = policy.predict_action_chunk(single, noise=noise[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-4)


def test_prediction_depends_on_image_and_instruction():
    policy = make_policy().eval()
    batch = make_batch(b=1)
    noise = torch.randn(1, 4, 7)
    base = policy.predict_action_chunk(batch, noise=noise)
    other_image = dict(batch, **{"observation.images.agentview": 255 - batch["observation.images.agentview"]})
    other_task = dict(batch, task=["open the door"])
    assert not torch.allclose(base, policy.predict_action_chunk(other_image, noise=noise))
    assert not torch.allclose(base, policy.predict_action_chunk(other_task, noise=noise))


def test_select_action_uses_one_chunk_per_n_action_steps(monkeypatch):
    policy = make_policy().eval()
    calls = []
    original = policy.predict_action_chunk
    monkeypatch.setattr(policy, "predict_action_chunk", lambda b: calls.append(1) or original(b))
    batch = make_batch(b=2)
    actions = [policy.select_action(batch) for _ in range(5)]
    assert len(calls) == 3  # n_action_steps = 2
    assert actions[0].shape == (2, 7)
    policy.reset()
    policy.select_action(batch)
    assert len(calls) == 4


def test_missing_camera_is_named():
    policy = make_policy().eval()
    batch = make_batch(b=1)
    batch["observation.images.wrist"] = batch.pop("observation.images.agentview")
    with pytest.raises(KeyError, match="agentview"):
        policy.predict_action_chunk(batch)


def test_unnormalised_policy_refuses_to_run():
    torch.manual_seed(0)
    policy = FlowVLAPolicy(tiny_config())
    with pytest.raises(RuntimeError, match="normalisation"):
        policy.predict_action_chunk(make_batch(b=1))


def test_mlp_time_conditioning_variant_trains():
    policy = make_policy(time_conditioning="mlp")
    loss, _ = policy(make_batch())
    loss.backward()
    assert policy.action_time_mlp_in.weight.grad.abs().sum() > 0


def test_presets_and_bad_values():
    with pytest.raises(ValueError, match="unknown preset"):
        PolicyConfig(preset="huge")
    with pytest.raises(ValueError, match="n_action_steps"):
        PolicyConfig(chunk_size=4, n_action_steps=8)
    cfg = PolicyConfig(preset="pi0", depth=2)
    assert cfg.width == 2048 and cfg.expert_width == 1024 and cfg.depth == 2


def test_pi0_shaped_model_has_pi0_scale():
    # Built on the meta device: shapes only, no memory.
    with torch.device("meta"):
        policy = FlowVLAPolicy(PolicyConfig(preset="pi0"))
    n = sum(p.numel() for p in policy.parameters())
    # pi0: ~0.4B SigLIP + ~2B Gemma (without its 0.5B token embedding, we use MiniLM) + ~0.3B expert
    assert 2.4e9 < n < 3.1e9, n
    layer = policy.transformer.vlm.layers[0].self_attn
    assert tuple(layer.q_proj.weight.shape) == (2048, 2048) and tuple(layer.k_proj.weight.shape) == (256, 2048)

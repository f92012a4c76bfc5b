"""The VLA's variational bottleneck (ZPRL on a pixel policy, docs/DECISIONS.md): mu of the pooled prefix,
decoded into one more prefix token the action expert attends to. Deployment conditions on e_hat(mu); the
bottleneck's terms train only the bottleneck; `vla train --policy.init=<flow_vla> --policy.vib_dim=N` adds
one without changing a weight of the policy; the three steering spaces and the steered checkpoint run on it."""

import pytest
import torch
from safetensors.torch import load_file

from tests.data.helpers import random_episodes, write_dataset
from tests.policy.helpers import bottleneck_gradients, make_batch, make_policy
from vla.config import ConfigError, TrainConfig
from vla.policy.checkpoint import STATS_FILE, WEIGHTS_FILE
from vla.policy.config import PolicyConfig
from vla.policy.registry import load_policy
from vla.policy.steered.actor import SteeringActor
from vla.policy.steered.policy import SteeredPolicy
from vla.policy.steered.spaces import make_space

B, CHUNK, A, N_STEPS, LATENT = 3, 4, 7, 2, 4


def test_deployment_reads_one_more_prefix_token_decoded_from_the_mean():
    policy = make_policy(seed=0, vib_dim=LATENT).eval()
    plain = make_policy(seed=0).eval()
    batch, noise = make_batch(b=B), torch.randn(B, CHUNK, A)
    with torch.no_grad():
        cache, _ = policy.encode_observation(batch)
        plain_cache, _ = plain.encode_observation(batch)
        assert cache.mask.shape[1] == plain_cache.mask.shape[1] + 1  # the bottleneck token
        assert torch.equal(cache.pooled(), plain_cache.pooled())  # value heads still read the prefix's own tokens
        context, mu = policy.bottleneck_encode(batch)
        assert mu.shape == (B, LATENT)
        chunk = policy.predict_action_chunk(batch, noise=noise)
        through_mean = policy.integrate(*policy.condition_from_latent(mu, context), noise=noise)
        assert torch.equal(chunk, policy.normalizer.unnormalize("action", through_mean))
        moved = policy.integrate(*policy.condition_from_latent(mu + 1.0, context), noise=noise)
        assert not torch.allclose(through_mean, moved)  # the latent moves the actions


def test_bottleneck_terms_train_only_the_bottleneck():
    policy = make_policy(seed=0, vib_dim=LATENT).train()
    batch = make_batch(b=4, seed=1)
    g = torch.Generator().manual_seed(0)
    noise, time = torch.randn(4, CHUNK, A, generator=g), torch.rand(4, generator=g)

    full, flow_only, info, flow_loss = bottleneck_gradients(policy, batch, noise, time)
    assert set(info) == {"loss", "flow_loss", "vib_flow_loss", "vib_kl", "vib_reconstruction"}
    assert flow_loss == pytest.approx(info["flow_loss"], rel=1e-6)
    base = [n for n in full if not n.startswith("vib.")]
    assert any(flow_only[n] is not None for n in base)
    for name in base:  # bit for bit: the bottleneck's terms add nothing to any policy weight
        assert (full[name] is None) == (flow_only[name] is None), name
        assert full[name] is None or torch.equal(full[name], flow_only[name]), name
    assert all(full[n] is not None and full[n].abs().sum() > 0 for n in full if n.startswith("vib."))


def test_the_flow_through_the_token_alone_trains_the_whole_bottleneck():
    """Without the KL and reconstruction terms the decoder and encoder still learn, from the frozen expert's
    flow loss through the bottleneck token."""
    policy = make_policy(seed=0, vib_dim=LATENT, vib_beta=0.0, vib_gamma=0.0).train()
    loss, _ = policy(make_batch(b=4, seed=1))
    loss.backward()
    for part in (policy.vib.encoder, policy.vib.decoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_gradient_checkpointing_and_bfloat16_train_with_a_bottleneck():
    from vla.policy.finetune import apply_finetune_options

    batch = make_batch(b=2, seed=1)
    g = torch.Generator().manual_seed(0)
    noise, time = torch.randn(2, CHUNK, A, generator=g), torch.rand(2, generator=g)
    grads = []
    for checkpointing in (False, True):
        policy = make_policy(seed=0, vib_dim=LATENT, gradient_checkpointing=checkpointing).train()
        apply_finetune_options(policy)
        loss, _ = policy(batch, noise=noise, time=time)
        loss.backward()
        grads.append({n: p.grad for n, p in policy.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert sum(g is not None for g in grads[0].values()) > 10
    for name, grad in grads[0].items():
        assert (grad is None) == (grads[1][name] is None), name
        assert grad is None or torch.allclose(grad, grads[1][name], atol=1e-6), name
    # bfloat16 weights keep the bottleneck in float32 (its latent is what RL moves by fractions of a unit)
    policy = make_policy(seed=0, vib_dim=LATENT, dtype="bfloat16", time_conditioning="mlp").train()
    apply_finetune_options(policy)
    assert all(p.dtype == torch.float32 for p in policy.vib.parameters())
    assert policy.multi_modal_projector.weight.dtype == torch.bfloat16
    loss, _ = policy(batch, noise=noise, time=time)
    loss.backward()
    with torch.no_grad():
        assert policy.eval().predict_action_chunk(batch, noise=noise).isfinite().all()


def test_adding_a_bottleneck_to_a_trained_vla_changes_none_of_its_weights(tmp_path, monkeypatch):
    from vla.train import sft

    base_dir = tmp_path / "base"
    make_policy(seed=0, cameras=["agentview"]).save_pretrained(base_dir)
    dataset = write_dataset(tmp_path / "demos", random_episodes(lengths=(6, 6)))
    cfg = TrainConfig(dataset=str(dataset), output_dir=str(tmp_path / "run"), steps=4, batch_size=2, lr=1e-2,
                      warmup_steps=1, log_every=2, save_every=0,
                      policy=PolicyConfig(init=str(base_dir), vib_dim=LATENT, cameras=["agentview"]))
    built = []

    def add_and_keep(pcfg):
        policy = real_add(pcfg)
        built.append({k: v.clone() for k, v in policy.state_dict().items()})
        return policy

    real_add = sft._add_bottleneck
    monkeypatch.setattr(sft, "_add_bottleneck", add_and_keep)
    final = sft.train(cfg, progress=False)
    before, after = load_file(str(base_dir / WEIGHTS_FILE)), load_file(str(final / WEIGHTS_FILE))
    assert {k for k in after if not k.startswith("vib.")} == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    stats_before, stats_after = (load_file(str(d / STATS_FILE)) for d in (base_dir, final))
    assert all(torch.equal(stats_before[k], stats_after[k]) for k in stats_before)  # the checkpoint's own
    loaded = load_policy(final)
    assert loaded.config.vib_dim == LATENT and loaded.vib is not None
    (initial,) = built  # the bottleneck moved away from its initialisation; nothing else did
    assert any(not torch.equal(after[k], initial[k]) for k in after if k.startswith("vib."))
    assert all(torch.equal(after[k], initial[k]) for k in before)

    with pytest.raises(ConfigError, match="without a bottleneck"):
        sft.train(TrainConfig(dataset=str(dataset), output_dir=str(tmp_path / "again"), steps=1, batch_size=2,
                          policy=PolicyConfig(init=str(final), vib_dim=LATENT, cameras=["agentview"])), progress=False)


def test_a_vla_with_a_bottleneck_and_latent_reasoning_is_refused():
    with pytest.raises(ValueError, match="not both"):
        make_policy(vib_dim=LATENT, latent_reasoning=True)
    with pytest.raises(ValueError, match="vib_dim"):
        make_policy(vib_dim=-1)


@pytest.mark.parametrize("algo", ["noise", "residual", "zprl"])
def test_steering_a_vla_reads_its_pooled_prefix_and_zero_steering_is_the_base(algo, tmp_path):
    # Frozen, as SteeredPolicy and the steering trainer hold it: on some CPUs (AVX-512, torch 2.13) a module
    # whose parameters require grad takes other kernels even under no_grad, and differs in the last bit.
    policy = make_policy(seed=0, vib_dim=LATENT if algo == "zprl" else 0).eval().requires_grad_(False)
    space = make_space(algo, policy, {"noise": 1.5, "residual": 0.2, "zprl": 0.5}[algo])
    batch, noise = make_batch(b=B), torch.randn(B, CHUNK, A)
    with torch.no_grad():
        observed = space.observe(batch)
        cache, _ = policy.encode_observation(batch)
        state = policy.normalized_state(batch)[:, :8]
        expected = torch.cat([cache.pooled(), state], dim=-1)
        if algo == "zprl":
            expected = torch.cat([expected, policy.bottleneck_encode(batch)[1]], dim=-1)
        assert observed.features.shape == (B, space.feature_dim) == expected.shape
        assert torch.equal(observed.features, expected)
        base = policy.predict_action_chunk(batch, noise=noise)[:, :N_STEPS]
        if algo == "noise":  # a = 0 is the ODE from x_0 = 0
            zero = policy.predict_action_chunk(batch, noise=torch.zeros(B, CHUNK, A))[:, :N_STEPS]
        else:
            zero = base
        assert torch.equal(space.chunk(observed, torch.zeros(B, space.dim), noise), zero)
        assert not torch.equal(space.chunk(observed, torch.ones(B, space.dim), noise), zero)

    # one checkpoint (frozen base + actor) that load_policy runs; an actor of zeros leaves zprl's base untouched
    actor = SteeringActor(space.feature_dim, space.dim, [16])
    if algo != "noise":
        torch.nn.init.zeros_(actor.mu.weight)
        torch.nn.init.zeros_(actor.mu.bias)
    steered = SteeredPolicy(policy, algo, space.scale, actor)
    steered.save_pretrained(tmp_path / "steered")
    loaded = load_policy(tmp_path / "steered")
    with torch.no_grad():
        chunk = loaded.predict_action_chunk(batch, noise=noise)
        assert torch.equal(chunk, steered.predict_action_chunk(batch, noise=noise))
        if algo != "noise":
            assert torch.equal(chunk, base)

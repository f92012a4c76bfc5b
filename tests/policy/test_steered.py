"""Steering a frozen flow policy (docs/ALGORITHMS.md sections 4 and 4b): the three steering spaces'
properties, and the steered policy's checkpoint (base + actor) through load_policy."""

import json

import numpy as np
import pytest
import torch

from tests.policy.helpers import make_batch, make_state_policy
from vla.errors import UserError
from vla.policy.checkpoint import CheckpointError
from vla.policy.registry import load_policy
from vla.policy.steered.actor import SteeringActor
from vla.policy.steered.policy import SteeredPolicy
from vla.policy.steered.spaces import make_space

B, CHUNK, A, N_STEPS = 5, 4, 7, 2  # make_state_policy: chunk 4, 7 actions, 2 executed
FEATURES = 8 + 10  # robot state + Lift's object state


def steerings(dim: int, seed: int = 0) -> list[torch.Tensor]:
    """Learner actions [B, dim] in [-1, 1]: the corners, zero and uniform draws."""
    g = torch.Generator().manual_seed(seed)
    return [torch.ones(B, dim), -torch.ones(B, dim), torch.zeros(B, dim),
            torch.rand(B, dim, generator=g) * 2 - 1, torch.sign(torch.randn(B, dim, generator=g))]


def record_calls(monkeypatch, obj, name: str) -> list:
    """Wrap obj.name so every call's arguments are kept."""
    calls, real = [], getattr(obj, name)

    def wrapped(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapped)
    return calls


# ------------------------------------------------------------------------------------ noise (DSRL)
@pytest.mark.parametrize("bound", [1.5, 2.0])
def test_noise_space_is_the_base_ode_from_the_steered_noise(bound):
    policy = make_state_policy(seed=0).eval()
    space = make_space("noise", policy, bound)
    assert space.dim == CHUNK * A
    batch = make_batch(b=B)
    g = torch.Generator().manual_seed(1)
    x0 = (torch.randn(B, CHUNK, A, generator=g)).clamp(-bound, bound)  # a fixed initial noise within the bound
    a = (x0 / bound).reshape(B, -1)
    if bound == 1.5:  # x0 / 1.5 * 1.5 need not round back to x0: take x0 as the bound times a
        x0 = bound * a.reshape(B, CHUNK, A)
    unused = torch.randn(B, CHUNK, A, generator=g)  # the base noise plays no part in this space
    chunk = space.chunk(batch, a, unused)
    expected = policy.predict_action_chunk(batch, noise=x0)[:, :N_STEPS]
    assert chunk.shape == (B, N_STEPS, A)
    assert torch.equal(chunk, expected)
    assert not torch.equal(space.chunk(batch, -a, unused), chunk)  # the steering moves the actions


def test_noise_the_base_receives_stays_within_the_bound(monkeypatch):
    policy = make_state_policy(seed=0).eval()
    bound = 1.5
    space = make_space("noise", policy, bound)
    calls = record_calls(monkeypatch, policy, "integrate")
    batch, base_noise = make_batch(b=B), 10 * torch.randn(B, CHUNK, A)
    rng = np.random.default_rng(0)
    warmups = torch.stack([torch.as_tensor(space.warmup_action(rng)) for _ in range(B)])
    for a in [*steerings(space.dim), warmups]:
        space.chunk(batch, a, base_noise)
    assert len(calls) == 6
    for _, kwargs in calls:
        noise = kwargs["noise"]
        assert noise.shape == (B, CHUNK, A)
        assert noise.abs().max() <= bound
    assert calls[0][1]["noise"].abs().min() == bound  # a = +-1 reaches the bound


# ------------------------------------------------------------------------------------ residual
def test_residual_zero_is_the_base_chunk_and_the_residual_is_bounded():
    policy = make_state_policy(seed=0).eval()
    scale = 0.2
    space = make_space("residual", policy, scale)
    assert space.dim == N_STEPS * A
    batch, noise = make_batch(b=B), torch.randn(B, CHUNK, A)
    base = policy.predict_action_chunk(batch, noise=noise)[:, :N_STEPS]
    assert torch.equal(space.chunk(batch, torch.zeros(B, space.dim), noise), base)
    clipped_base = base.clamp(-1, 1)
    for a in steerings(space.dim)[:2] + steerings(space.dim)[3:]:
        chunk = space.chunk(batch, a, noise)
        assert chunk.shape == (B, N_STEPS, A)
        assert chunk.min() >= -1 and chunk.max() <= 1
        assert (chunk - clipped_base).abs().max() <= scale + 1e-6
    # the residual is per executed action: one coordinate of a moves one coordinate of the chunk
    a = torch.zeros(B, space.dim)
    a[:, A + 2] = 1.0  # second executed action, third coordinate
    # (a nonzero steering clips the whole chunk into the env's action box, which the env does anyway)
    moved = (space.chunk(batch, a, noise) != clipped_base).nonzero()[:, 1:].unique(dim=0).tolist()
    assert moved in ([[1, 2]], [])  # [] only if the base is already at +1 there
    assert not (base[:, 1, 2] < 1 - scale).all() or moved == [[1, 2]]


# ------------------------------------------------------------------------------------ zprl
def test_zprl_zero_is_the_base_and_the_latent_moves_at_most_the_scale(monkeypatch):
    policy = make_state_policy(seed=0, vib_dim=4).eval()
    scale = 0.2
    space = make_space("zprl", policy, scale)
    assert space.dim == 4
    batch, noise = make_batch(b=B), torch.randn(B, CHUNK, A)
    base = policy.predict_action_chunk(batch, noise=noise)[:, :N_STEPS]
    assert torch.equal(space.chunk(batch, torch.zeros(B, 4), noise), base)
    z = policy.bottleneck_encode(batch)[1]
    assert space.actor_features(batch).shape == (B, FEATURES + 4)
    assert torch.equal(space.actor_features(batch)[:, FEATURES:], z)  # the actor reads [observation, z]
    calls = record_calls(monkeypatch, policy, "condition_from_latent")
    for a in steerings(space.dim):
        chunk = space.chunk(batch, a, noise)
        assert chunk.shape == (B, N_STEPS, A)
        if torch.any(a):
            assert not torch.equal(chunk, base)
    latents = [args[0] for args, _ in calls]
    assert len(latents) == len(steerings(space.dim))
    for z_steered in latents:
        assert (z_steered - z).abs().max() <= scale + 1e-6
    assert (latents[0] - z).abs().max() > scale * 0.99  # a = 1 uses the whole range


def test_zprl_needs_a_bottleneck_and_says_how_to_train_one():
    with pytest.raises(UserError) as info:
        make_space("zprl", make_state_policy(seed=0), 0.2)
    message = str(info.value)
    for flag in ("vla train", "--policy.type=state_flow", "--policy.init=", "--policy.vib_dim=", "vib_reconstruction"):
        assert flag in message
    with pytest.raises(UserError, match="must be > 0"):
        make_space("residual", make_state_policy(seed=0), 0.0)
    with pytest.raises(UserError, match="not one of"):
        make_space("latent", make_state_policy(seed=0), 0.2)


# ------------------------------------------------------------------------------------ the steered policy
def make_steered(space: str, seed: int = 0) -> SteeredPolicy:
    base = make_state_policy(seed=seed, vib_dim=4 if space == "zprl" else 0)
    dims = {"noise": (FEATURES, CHUNK * A), "residual": (FEATURES, N_STEPS * A), "zprl": (FEATURES + 4, 4)}[space]
    torch.manual_seed(seed + 1)
    actor = SteeringActor(*dims, hidden=[16, 16])
    with torch.no_grad():
        actor.mu.weight.mul_(5.0)  # steer well away from a = 0
    return SteeredPolicy(base, space, {"noise": 1.5, "residual": 0.2, "zprl": 0.2}[space], actor)


@pytest.mark.parametrize("space", ["noise", "residual", "zprl"])
def test_steered_policy_round_trip_gives_the_same_chunks(space, tmp_path):
    steered = make_steered(space)
    assert all(not p.requires_grad for p in steered.base.parameters())
    batch, noise = make_batch(b=B), torch.randn(B, CHUNK, A)
    before = steered.predict_action_chunk(batch, noise=noise)
    assert before.shape == (B, N_STEPS, A)
    a = steered.steering(batch)
    assert torch.equal(before, steered.space.chunk(batch, a, noise))
    assert not torch.equal(before, steered.base.predict_action_chunk(batch, noise=noise)[:, :N_STEPS])

    steered.save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    assert meta["type"] == "steered" and meta["space"] == space
    loaded = load_policy(tmp_path / "p")
    assert isinstance(loaded, SteeredPolicy) and loaded.space.name == space
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise), before)
    assert all(not p.requires_grad for p in loaded.base.parameters())
    # select_action plays the chunk's actions in order, then predicts the next chunk
    loaded.reset()
    one = {k: v[:1] for k, v in batch.items()}
    torch.manual_seed(7)
    first = [loaded.select_action(one) for _ in range(N_STEPS)]
    torch.manual_seed(7)
    chunk = loaded.predict_action_chunk(one)
    assert all(torch.equal(first[i], chunk[:, i]) for i in range(N_STEPS))


@pytest.mark.parametrize("space", ["residual", "zprl"])
def test_zero_steering_actor_is_the_base_policy(space):
    steered = make_steered(space)
    with torch.no_grad():
        steered.actor.mu.weight.zero_()
        steered.actor.mu.bias.zero_()
    batch, noise = make_batch(b=B), torch.randn(B, CHUNK, A)
    assert torch.equal(steered.predict_action_chunk(batch, noise=noise),
                       steered.base.predict_action_chunk(batch, noise=noise)[:, :N_STEPS])


def test_steered_checkpoint_refusals_name_the_problem(tmp_path):
    good = tmp_path / "good"
    make_steered("residual").save_pretrained(good)

    def copy(name: str):
        import shutil

        target = tmp_path / name
        shutil.copytree(good, target)
        return target

    missing = copy("missing")
    (missing / "actor.safetensors").unlink()
    with pytest.raises(CheckpointError, match="actor.safetensors"):
        load_policy(missing)

    corrupt = copy("corrupt")
    data = (corrupt / "actor.safetensors").read_bytes()
    (corrupt / "actor.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="actor.safetensors"):
        load_policy(corrupt)

    garbage = copy("garbage")
    (garbage / "actor.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="actor.safetensors"):
        load_policy(garbage)

    def edit(name: str, **changes):
        target = copy(name)
        meta = json.loads((target / "config.json").read_text())
        meta.update(changes)
        (target / "config.json").write_text(json.dumps(meta))
        return target

    with pytest.raises(CheckpointError, match="space 'latent' is not one of"):
        load_policy(edit("bad_space", space="latent"))
    with pytest.raises(CheckpointError, match="not a steered-policy config"):
        load_policy(edit("no_scale", scale=None))
    with pytest.raises(CheckpointError, match="actor.safetensors"):  # weights that do not fit the config
        load_policy(edit("bad_hidden", actor_hidden=[8, 8]))
    with pytest.raises(CheckpointError, match="needs 18 -> 28"):  # an actor that does not fit the base
        load_policy(edit("bad_space_dims", space="noise"))

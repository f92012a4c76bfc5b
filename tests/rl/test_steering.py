"""`vla rl --algo noise|residual|zprl`: SAC steering a frozen flow policy (docs/ALGORITHMS.md 4, 4b).

The steering env, the deployed actor against SB3's own prediction, whole runs on the toy env of
fake_env.py (every space) and one on the real robosuite Lift, bad input refused before any rollout,
and the NaN guard."""

import copy
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vla.sim
from tests.policy.helpers import make_policy, make_state_policy
from tests.rl.fake_env import FakeVectorEnv
from vla.cli import main as cli_main
from vla.config import ConfigError, RLConfig
from vla.policy.checkpoint import WEIGHTS_FILE
from vla.policy.observation import observations_to_batch
from vla.policy.registry import load_policy
from vla.policy.steered.actor import SteeringActor
from vla.policy.steered.policy import SteeredPolicy
from vla.policy.steered.spaces import make_space
from vla.rl.steering import trainer as steering_trainer
from vla.rl.steering.env import SteeringEnv
from vla.rl.steering.trainer import train_steering

pytest.importorskip("stable_baselines3")

SCALES = {"noise": 1.5, "residual": 0.2, "zprl": 0.2}


class OneFakeEnv:
    """fake_env.py's toy task as one env with the interface SteeringEnv drives (vla.sim.make_env's):
    reset(seed) -> (obs, info), step_chunk(actions [H, 7]) -> (obs, reward, terminated, truncated, info)."""

    def __init__(self, max_episode_steps: int = 8, cameras=(), **_):
        self.vec = FakeVectorEnv(1, {"cameras": tuple(cameras), "max_episode_steps": max_episode_steps})
        self.chunks: list[np.ndarray] = []

    def reset(self, seed=None):
        return self.vec.reset([seed])[0], {}

    def step_chunk(self, actions, record=False):
        self.chunks.append(np.array(actions))
        return self.vec.step_chunk(np.asarray(actions)[None])[0]

    def close(self):
        self.vec.close()


def toy_policy(vib: bool = False):
    """A state policy that reads what the toy env shows: robot state only."""
    return make_state_policy(seed=0, environment_state_dim=0, vib_dim=4 if vib else 0).eval()


@pytest.fixture(scope="module")
def toy_policies(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    toy_policy().save_pretrained(root / "plain")
    toy_policy(vib=True).save_pretrained(root / "vib")
    return root


@pytest.fixture
def toy_env(monkeypatch):
    """vla.sim.make_env builds toy envs (kept in the returned list); no worker processes may start."""
    made = []

    def make_env(**kwargs):
        made.append(OneFakeEnv(**kwargs))
        return made[-1]

    monkeypatch.setattr(vla.sim, "make_env", make_env)
    monkeypatch.setattr(vla.sim, "VectorEnv", lambda *a, **k: pytest.fail("the final evaluation ran"))
    return made


def toy_config(policy, out, algo, **offpolicy) -> RLConfig:
    cfg = RLConfig(algo=algo, policy=str(policy), output_dir=str(out), seed=0, num_threads=1)
    cfg.env.max_episode_steps = 8
    cfg.eval.n_episodes, cfg.eval.n_episodes_periodic = 0, 1
    o = cfg.offpolicy
    o.env_steps, o.warmup_steps, o.utd, o.batch_size, o.hidden, o.buffer_size, o.eval_every = 60, 16, 1, 8, [16, 16], 500, 30
    for key, value in offpolicy.items():
        setattr(o, key, value)
    return cfg


# ------------------------------------------------------------------------------------ the env
@pytest.mark.parametrize("algo", ["noise", "residual", "zprl"])
def test_steering_env_plays_the_spaces_chunks_reproducibly(algo):
    policy = toy_policy(vib=algo == "zprl")
    space = make_space(algo, policy, SCALES[algo])
    env = SteeringEnv(space, OneFakeEnv(), "success", first_seed=5)
    assert env.action_space.shape == (space.dim,) and env.action_space.low.min() == -1
    assert env.observation_space.shape == (8 + (4 if algo == "zprl" else 0),)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, space.dim).astype(np.float32) for _ in range(3)]

    def episode(seed):
        features, _ = env.reset(seed=seed)
        out, chunks = [features], []
        for a in actions:
            batch = observations_to_batch([env.env.vec._obs(0)], [])
            features, reward, terminated, truncated, info = env.step(a)
            chunks.append(env.env.chunks[-1])
            out.append((features, reward, terminated, truncated, info["steps"]))
            # what the simulator received is the space's chunk with the episode's own base noise
            g = torch.Generator().manual_seed(seed)
            noises = [torch.randn(1, 4, 7, generator=g) for _ in range(len(chunks))]
            with torch.no_grad():
                expected = space.chunk(batch, torch.as_tensor(a)[None], noises[-1])[0].numpy()
            assert np.array_equal(chunks[-1], expected)
            if terminated or truncated:
                break
        return out, chunks

    first, chunks = episode(3)
    again, chunks_again = episode(3)
    assert all(np.array_equal(a, b) for a, b in zip(chunks, chunks_again))
    assert repr(first) == repr(again)
    other, _ = episode(4)
    assert repr(other) != repr(first)


# ------------------------------------------------------------------------------------ the deployed actor
def test_actor_copy_reproduces_sb3_deterministic_prediction():
    from stable_baselines3 import SAC

    space = make_space("residual", toy_policy(), 0.2)
    env = SteeringEnv(space, OneFakeEnv(), "success")
    agent = SAC("MlpPolicy", env, learning_starts=8, batch_size=8, buffer_size=200, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16, 16]})
    agent.learn(total_timesteps=24)  # a few updates, so the weights are not the initial ones
    actor = SteeringActor.from_sb3(agent.actor).eval()
    assert actor.hidden == [16, 16] and (actor.feature_dim, actor.action_dim) == (8, space.dim)
    obs = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32) * 3
    expected, _ = agent.predict(obs, deterministic=True)
    with torch.no_grad():
        got = actor(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert np.abs(expected).max() > 1e-3  # not trivially all zero


# ------------------------------------------------------------------------------------ whole runs
@pytest.mark.parametrize("algo", ["noise", "residual", "zprl"])
def test_run_on_the_toy_env_saves_a_steered_policy_and_keeps_the_base(algo, toy_policies, toy_env, tmp_path,
                                                                      monkeypatch):
    base_dir = toy_policies / ("vib" if algo == "zprl" else "plain")
    loaded = []
    real_load = steering_trainer.load_policy

    def load_and_keep(*args, **kwargs):
        policy = real_load(*args, **kwargs)
        loaded.append((policy, copy.deepcopy(policy.state_dict())))
        return policy

    monkeypatch.setattr(steering_trainer, "load_policy", load_and_keep)
    played = []
    real_step = SteeringEnv.step
    monkeypatch.setattr(SteeringEnv, "step", lambda self, a: (played.append(np.array(a)), real_step(self, a))[1])

    cfg = toy_config(base_dir, tmp_path / "run", algo)
    summary = train_steering(cfg, progress=False)
    out = tmp_path / "run"
    assert summary["env_steps"] >= 60 and summary["algo"] == algo and summary["scale"] == SCALES[algo]
    assert json.loads((out / "rl_summary.json").read_text()) == summary
    history = json.loads((out / "history.json").read_text())
    assert [h["env_steps"] >= 30 * (i + 1) for i, h in enumerate(history)] == [True, True]
    cpu = [h["train_cpu_minutes"] for h in history]  # the budget meter, periodic evaluations left out
    assert 0 < cpu[0] < cpu[1] <= summary["train_cpu_minutes"]
    assert (out / "success.png").is_file()

    # the base is frozen: its weights in memory and in the saved policy are what was loaded
    (base, snapshot), = loaded
    assert all(not p.requires_grad for p in base.parameters())
    assert all(torch.equal(v, snapshot[k]) for k, v in base.state_dict().items())
    saved, original = load_file(str(out / "policy" / "base" / WEIGHTS_FILE)), load_file(str(base_dir / WEIGHTS_FILE))
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)

    steered = load_policy(out / "policy")
    assert isinstance(steered, SteeredPolicy) and steered.space.name == algo
    obs = OneFakeEnv().reset(seed=0)[0]
    assert steered.predict_action_chunk(observations_to_batch([obs], [])).shape == (1, 2, 7)

    # warm-up (16 env steps = 8 decisions) plays the base unsteered, then the actor steers
    warmup = played[:8]
    if algo == "noise":  # the base's own Gaussian noise, clipped into the steerable box
        assert all(np.abs(a).max() <= 1 for a in warmup)
    else:
        assert all(not a.any() for a in warmup)
    assert any(a.any() for a in played[8:])


@pytest.mark.parametrize("zero_init", [True, False])
def test_the_actor_starts_at_zero_steering_unless_asked_not_to(zero_init, toy_policies, toy_env, tmp_path):
    """A random output layer steers every state its own way from the first update (residual on the pixel VLA:
    48% -> 5%); zero-initialised, the deterministic steering starts at the base policy for every state."""
    cfg = toy_config(toy_policies / "plain", tmp_path / "run", "residual", zero_init_actor=zero_init)
    policy = load_policy(toy_policies / "plain")
    space = make_space("residual", policy, 0.2)
    env = SteeringEnv(space, OneFakeEnv(), "success")
    agent = steering_trainer._make_agent(cfg, space, env)
    obs = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32) * 3
    steering, _ = agent.predict(obs, deterministic=True)
    assert (not np.abs(steering).any()) == zero_init
    assert agent.actor.mu.weight.requires_grad  # zeroed, not frozen


def test_steering_env_encodes_a_pixel_vla_once_per_decision_and_plays_its_chunks(monkeypatch):
    """Each decision encodes the current camera frame once; the chunk played is the space's chunk for that
    frame, so a stale observation (the reset's, reused) would show."""
    policy = make_policy(seed=0, vib_dim=4, cameras=["agentview"]).eval()
    space = make_space("zprl", policy, 0.5)
    env = SteeringEnv(space, OneFakeEnv(cameras=["agentview"]), "success", first_seed=5)
    encodes = []
    real_encode = policy.encode_prefix_and_state
    monkeypatch.setattr(policy, "encode_prefix_and_state", lambda batch: (encodes.append(1), real_encode(batch))[1])
    features, _ = env.reset(seed=3)
    assert len(encodes) == 1
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        batch = observations_to_batch([env.env.vec._obs(0)], ["agentview"])
        a = rng.uniform(-1, 1, space.dim).astype(np.float32)
        with torch.no_grad():
            assert np.array_equal(features, space.actor_features(batch)[0].numpy())
            expected = space.chunk(batch, torch.as_tensor(a)[None], torch.randn(1, 4, 7, generator=g))[0].numpy()
        encodes.clear()
        features, _, terminated, truncated, _ = env.step(a)
        assert len(encodes) == 1  # the next observation's, which the next chunk reuses
        assert np.array_equal(env.env.chunks[-1], expected)
        if terminated or truncated:
            break
    assert len(env.env.chunks) >= 2 and not np.array_equal(env.env.chunks[0], env.env.chunks[1])


def test_zprl_steers_a_pixel_vla_through_its_prefix_bottleneck(toy_env, tmp_path):
    """The VLA reads the toy env's camera; the actor reads the frozen VLA's pooled prefix, state and z."""
    make_policy(seed=0, vib_dim=4, cameras=["agentview"]).eval().save_pretrained(tmp_path / "vla")
    cfg = toy_config(tmp_path / "vla", tmp_path / "run", "zprl", env_steps=24, warmup_steps=8, eval_every=0)
    summary = train_steering(cfg, progress=False)
    assert summary["env_steps"] >= 24 and summary["episodes"] >= 3
    steered = load_policy(tmp_path / "run" / "policy")
    width = steered.base.config.width
    assert steered.actor.feature_dim == width + 8 + 4 and steered.actor.action_dim == 4
    obs = OneFakeEnv(cameras=["agentview"]).reset(seed=0)[0]
    batch = observations_to_batch([obs], ["agentview"])
    assert steered.predict_action_chunk(batch).shape == (1, 2, 7)
    saved = load_file(str(tmp_path / "run" / "policy" / "base" / WEIGHTS_FILE))
    original = load_file(str(tmp_path / "vla" / WEIGHTS_FILE))
    assert all(torch.equal(saved[k], original[k]) for k in original)


@pytest.mark.timeout(120)
def test_residual_run_on_lift(tmp_path):
    pytest.importorskip("robosuite")
    make_state_policy(seed=0).save_pretrained(tmp_path / "base")  # robot state 8, Lift's object state 10
    cfg = RLConfig(algo="residual", policy=str(tmp_path / "base"), output_dir=str(tmp_path / "run"), n_envs=2,
                   seed=0, num_threads=1)
    cfg.env.max_episode_steps = 30
    cfg.eval.n_episodes, cfg.eval.n_episodes_periodic = 2, 1
    o = cfg.offpolicy
    o.env_steps, o.warmup_steps, o.utd, o.batch_size, o.hidden, o.buffer_size, o.eval_every = 300, 40, 1, 32, [32, 32], 1000, 150
    summary = train_steering(cfg, progress=False)
    out = tmp_path / "run"
    assert summary["env_steps"] >= 300 and summary["episodes"] >= 9
    for key in ("base_pc_success", "eval_pc_success", "states_fixed", "states_broken", "train_success_last100"):
        assert key in summary
    assert json.loads((out / "rl_summary.json").read_text()) == summary
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert (out / "success.png").is_file() and (out / "eval" / "eval_info.json").is_file()
    steered = load_policy(out / "policy")
    assert isinstance(steered, SteeredPolicy) and steered.space.name == "residual" and steered.space.scale == 0.2
    saved = load_file(str(out / "policy" / "base" / WEIGHTS_FILE))
    original = load_file(str(tmp_path / "base" / WEIGHTS_FILE))
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)


@pytest.mark.parametrize("algo,options", [
    ("residual", {}),
    ("noise", {"warmup_steps": 64}),  # the stop falls inside the warm-up
    ("zprl", {"n_critics": 4, "target_subset": 2, "entropy_in_target": False}),
])
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(algo, options, toy_policies, toy_env, tmp_path):
    base_dir = toy_policies / ("vib" if algo == "zprl" else "plain")
    common = {"env_steps": 120, "eval_every": 40, "save_every": 0, **options}
    whole = train_steering(toy_config(base_dir, tmp_path / "whole", algo, **common), progress=False)
    stopped = train_steering(toy_config(base_dir, tmp_path / "parts", algo, stop_after=50, **common), progress=False)
    assert stopped["stopped"] and 50 <= stopped["env_steps"] < 120
    assert not (tmp_path / "parts" / "policy").exists()
    cfg = toy_config(base_dir, tmp_path / "parts", algo, **common)
    cfg.resume = True
    made_before = len(toy_env)
    resumed = train_steering(cfg, progress=False)
    # the resumed call played only what was left (its train env is the first it built), not the whole run;
    # chunk rows, so a chunk cut short by an episode's end counts in full
    played = sum(len(chunk) for chunk in toy_env[made_before].chunks)
    assert 120 - stopped["env_steps"] <= played < 120
    timing = ("train_s", "eval_s", "update_s", "train_cpu_minutes")
    assert {k: v for k, v in resumed.items() if k not in timing and k != "policy"} == \
        {k: v for k, v in whole.items() if k not in timing and k != "policy"}
    episodes = lambda run: [{k: v for k, v in e.items() if k != "train_cpu_minutes"}
                            for e in json.loads((tmp_path / run / "episodes.json").read_text())]
    assert episodes("whole") == episodes("parts")
    strip = lambda run: [{k: v for k, v in h.items() if k not in ("wall_s", "train_cpu_minutes")}
                         for h in json.loads((tmp_path / run / "history.json").read_text())]
    assert strip("whole") == strip("parts") and len(strip("whole")) == 3
    # the CPU meter carries on across the resume rather than starting again
    cpu = [h["train_cpu_minutes"] for h in json.loads((tmp_path / "parts" / "history.json").read_text())]
    assert cpu == sorted(cpu) and cpu[0] > 0 and resumed["train_cpu_minutes"] >= cpu[-1]
    a = load_file(str(tmp_path / "whole" / "policy" / "actor.safetensors"))
    b = load_file(str(tmp_path / "parts" / "policy" / "actor.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_killed_after_a_periodic_checkpoint_resumes_exactly(toy_policies, toy_env, tmp_path, monkeypatch):
    common = {"env_steps": 120, "eval_every": 0, "save_every": 30}
    whole = train_steering(toy_config(toy_policies / "plain", tmp_path / "whole", "residual", **common),
                           progress=False)
    real_end = steering_trainer.Monitor._end_episode

    def killed_late(self, success):
        real_end(self, success)
        if self.env_steps >= 90:
            raise KeyboardInterrupt  # after the checkpoints at ~30 and ~60 env steps, before the one at ~90

    monkeypatch.setattr(steering_trainer.Monitor, "_end_episode", killed_late)
    with pytest.raises(KeyboardInterrupt):
        train_steering(toy_config(toy_policies / "plain", tmp_path / "parts", "residual", **common), progress=False)
    monkeypatch.setattr(steering_trainer.Monitor, "_end_episode", real_end)
    saved_at = json.loads((tmp_path / "parts" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert 60 <= saved_at["monitor"]["env_steps"] < 90 and saved_at["monitor"]["next_save"] == 90
    cfg = toy_config(toy_policies / "plain", tmp_path / "parts", "residual", **common)
    cfg.resume = True
    resumed = train_steering(cfg, progress=False)
    timing = ("train_s", "eval_s", "update_s", "train_cpu_minutes", "policy")
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}
    a = load_file(str(tmp_path / "whole" / "policy" / "actor.safetensors"))
    b = load_file(str(tmp_path / "parts" / "policy" / "actor.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings_and_a_finished_run_and_keeps_the_checkpoint(toy_policies, toy_env, tmp_path):
    out = tmp_path / "run"
    train_steering(toy_config(toy_policies / "plain", out, "residual", stop_after=20, save_every=0), progress=False)
    state = (out / "checkpoints" / "last" / "trainer_state.json").read_text()
    for algo, options, message in (("noise", {}, "steers with --algo residual"),
                                   ("residual", {"save_every": 0, "utd": 2}, r"other settings \(offpolicy\)"),
                                   ("residual", {"save_every": 0, "eval_every": 0}, "other settings")):
        cfg = toy_config(toy_policies / "plain", out, algo, **options)
        cfg.resume = True
        with pytest.raises(ConfigError, match=message):
            train_steering(cfg, progress=False)
        assert (out / "checkpoints" / "last" / "trainer_state.json").read_text() == state
    cfg = toy_config(toy_policies / "plain", out, "residual", save_every=0)
    cfg.resume = True
    train_steering(cfg, progress=False)  # the same settings (a longer or shorter env_steps would do too)
    with pytest.raises(ConfigError, match="has finished"):
        train_steering(cfg, progress=False)


# ------------------------------------------------------------------------------------ refusals
def test_bad_input_is_refused_before_any_rollout(toy_policies, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(vla.sim, "make_env", lambda **k: pytest.fail("an env was built"))
    monkeypatch.setattr(vla.sim, "VectorEnv", lambda *a, **k: pytest.fail("an env was built"))
    plain, vib = toy_policies / "plain", toy_policies / "vib"
    steered_dir = tmp_path / "steered"
    SteeredPolicy(toy_policy(), "residual", 0.2, SteeringActor(8, 14, [8])).save_pretrained(steered_dir)
    cases = [
        (["--algo=residual", f"--policy={plain}", "--offpolicy.scale=1.5"], "--offpolicy.scale=1.5"),
        (["--algo=noise", f"--policy={plain}", "--offpolicy.scale=-1"], "must be in (0, 3.0]"),
        (["--algo=zprl", f"--policy={plain}"], "--policy.vib_dim"),
        (["--algo=residual", f"--policy={plain}", "--resume=true"], "nothing to resume"),
        (["--algo=residual", f"--policy={plain}", "--offpolicy.stop_after=-1"], "stop_after must be >= 0"),
        (["--algo=residual", f"--policy={plain}", "--reward=sparse"], "--reward: 'sparse'"),
        (["--algo=residual", f"--policy={steered_dir}"], "already a steered policy"),
        (["--algo=zprl", f"--policy={vib}", "--offpolicy.utd=0"], "--offpolicy.utd"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        assert cli_main(["rl", *args, f"--output_dir={out}"]) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert not out.exists()  # nothing written


def test_nan_in_the_learner_stops_the_run_naming_it(toy_policies, toy_env, tmp_path, monkeypatch):
    from stable_baselines3 import SAC

    real_train = SAC.train

    def poisoned(self, *args, **kwargs):
        real_train(self, *args, **kwargs)
        self.logger.record("train/critic_loss", float("nan"))

    monkeypatch.setattr(SAC, "train", poisoned)
    cfg = toy_config(toy_policies / "plain", tmp_path / "run", "residual", warmup_steps=10)
    with pytest.raises(FloatingPointError, match=r"critic_loss is nan at env step \d+") as info:
        train_steering(cfg, progress=False)
    step = int(re.search(r"env step (\d+)", str(info.value)).group(1))
    assert 10 <= step < 60  # after the first update, not at the end of the run
    assert not (tmp_path / "run" / "policy").exists()


def test_validate_names_the_flag(toy_policies, tmp_path):
    cfg = toy_config(toy_policies / "plain", tmp_path / "run", "residual", hidden=[])
    with pytest.raises(ConfigError, match="--offpolicy.hidden"):
        train_steering(cfg, progress=False)
    cfg = toy_config(toy_policies / "plain", tmp_path / "run", "residual", tau=0.0)
    with pytest.raises(ConfigError, match="--offpolicy.tau"):
        train_steering(cfg, progress=False)
    cfg = toy_config(toy_policies / "plain", tmp_path / "run", "residual", n_critics=2, target_subset=3)
    with pytest.raises(ConfigError, match="--offpolicy.target_subset"):
        train_steering(cfg, progress=False)


def test_ensemble_target_draws_a_random_subset_and_trains_every_critic(toy_policies, toy_env, tmp_path, monkeypatch):
    """REDQ / ZPRL's update: 4 critics, TD target from the minimum of 2 drawn per step."""
    drawn = []
    real_randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda n, *a, **k: (drawn.append(n), real_randperm(n, *a, **k))[1])
    cfg = toy_config(toy_policies / "plain", tmp_path / "run", "residual", n_critics=4, target_subset=2,
                     entropy_in_target=False)
    import stable_baselines3

    critics = []
    real_learn = stable_baselines3.SAC.learn

    def learn(self, *args, **kwargs):
        critics.append(copy.deepcopy(self.critic.state_dict()))
        result = real_learn(self, *args, **kwargs)
        critics.append(copy.deepcopy(self.critic.state_dict()))
        return result

    monkeypatch.setattr(stable_baselines3.SAC, "learn", learn)
    summary = train_steering(cfg, progress=False)
    assert summary["env_steps"] >= 60
    assert drawn and set(drawn) == {4}  # one draw over the 4 critics per gradient step
    before, after = critics
    for i in range(4):  # each critic of the ensemble was trained
        keys = [k for k in before if k.startswith(f"qf{i}.")]
        assert keys and any(not torch.equal(before[k], after[k]) for k in keys)


def test_entropy_out_of_the_target_is_honoured_without_an_ensemble(toy_policies, toy_env, tmp_path, monkeypatch):
    """ZPRL's released variant with SAC's 2 critics: our update runs, never SB3's (which keeps the bonus)."""
    import stable_baselines3

    def sb3_train(self, *args, **kwargs):
        raise AssertionError("SB3's own update ran: it always adds the entropy bonus to the target")

    monkeypatch.setattr(stable_baselines3.SAC, "train", sb3_train)
    cfg = toy_config(toy_policies / "plain", tmp_path / "run", "residual", entropy_in_target=False)
    assert train_steering(cfg, progress=False)["env_steps"] >= 60

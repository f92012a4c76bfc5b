"""Filtered BC's pieces: the targets are the actions that followed each observation, only successful
trajectories teach, and the demo set is refused with a clear message when it is not a dataset."""

import pytest
import torch

from tests.policy.helpers import make_batch, make_policy
from tests.rl.test_rl_trainer import make_config, run
from vla.config import ConfigError, RLConfig
from vla.policy.flow_matching_policy import ACTION_KEY
from vla.rl.filtered_bc import filtered_bc_update, followed_actions
from vla.rl.rollout import Rollouts, SamplingSpec, Trajectory
from vla.rl.update import UpdateContext


def rollouts_of(policy, decisions: list[list[int]], success: list[bool], seed: int = 0,
                steps: list[int] | None = None) -> Rollouts:
    """Trajectories made of the given decision indices, with random chains and observations; steps: each
    trajectory's env steps (default: every decision ran its n_action_steps rows)."""
    n = sum(len(d) for d in decisions)
    c = policy.config
    g = torch.Generator().manual_seed(seed)
    chains = torch.randn(n, c.num_inference_steps + 1, c.chunk_size, c.action_dim, generator=g)
    batch = make_batch(b=n, seed=seed)
    observations = {k: v for k, v in batch.items() if k in ("observation.images.agentview", "observation.state", "task")}
    traj_ids = torch.zeros(n, dtype=torch.long)
    trajectories = []
    for t, (ds, ok) in enumerate(zip(decisions, success)):
        traj_ids[ds] = t
        n = steps[t] if steps else len(ds) * c.n_action_steps
        trajectories.append(Trajectory(t, t, t, "task", ok, n, 0.0, list(ds)))
    zeros = torch.zeros(n)
    return Rollouts(observations=observations, chains=chains, step_masks=torch.ones(n, c.num_inference_steps,
                    dtype=torch.bool), log_probs=zeros, row_log_probs=torch.zeros(n, c.n_action_steps),
                    values=zeros, rewards=zeros, env_rewards=zeros, dones=torch.zeros(n, dtype=torch.bool),
                    entropy=zeros, std_mean=zeros, traj_ids=traj_ids, trajectories=trajectories)


def test_targets_are_the_actions_that_followed_each_observation():
    policy = make_policy(seed=0, chunk_size=7, n_action_steps=2)
    h, n_exec = policy.config.chunk_size, 2
    assert h > 2 * n_exec, "the test needs a chunk reaching past the next decision"
    r = rollouts_of(policy, [[0, 1, 2], [3]], [True, False])
    chunks = policy.normalizer.unnormalize(ACTION_KEY, r.chains[:, -1])
    targets, pads = followed_actions(policy, r, n_exec)
    # decision 0: its own executed rows, then decision 1's, then decision 2's, then padding
    assert torch.equal(targets[0, :n_exec], chunks[0, :n_exec])
    assert torch.equal(targets[0, n_exec:2 * n_exec], chunks[1, :n_exec])
    assert torch.equal(targets[0, 2 * n_exec:3 * n_exec], chunks[2, :n_exec])
    assert not pads[0, :min(h, 3 * n_exec)].any() and pads[0, 3 * n_exec:].all()
    # the last decision of a trajectory: only its executed rows are real; nothing crosses trajectories
    assert torch.equal(targets[2, :n_exec], chunks[2, :n_exec]) and pads[2, n_exec:].all()
    assert torch.equal(targets[3, :n_exec], chunks[3, :n_exec]) and pads[3, n_exec:].all()
    # an episode that ended one row into its last chunk: that decision's second row never ran
    r = rollouts_of(policy, [[0, 1]], [True], steps=[n_exec + 1])
    chunks = policy.normalizer.unnormalize(ACTION_KEY, r.chains[:, -1])
    targets, pads = followed_actions(policy, r, n_exec)
    assert torch.equal(targets[0, n_exec], chunks[1, 0]) and pads[0, n_exec + 1:].all()
    assert not pads[1, 0] and pads[1, 1:].all()


def test_only_successful_trajectories_teach():
    policy = make_policy(seed=0)
    params = list(policy.parameters())
    cfg = RLConfig(algo="filtered_bc", epochs=1, minibatch_size=4)
    g = torch.Generator().manual_seed(0)
    ctx = UpdateContext(policy.train(), torch.optim.AdamW(params, lr=1e-3), params, SamplingSpec("ode"), 0, g)
    before = [p.detach().clone() for p in params]
    stats = filtered_bc_update(ctx, rollouts_of(policy, [[0, 1], [2]], [False, False]), cfg)
    assert stats["skipped_update"] == 1.0 and stats["kept_decisions"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    stats = filtered_bc_update(ctx, rollouts_of(policy, [[0, 1], [2]], [False, True]), cfg)
    assert stats["kept_decisions"] == 1 and stats["optimizer_steps"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


def test_filtered_bc_learns_its_successes_and_keeps_to_the_demos():
    """Repeated updates on one successful trajectory lower the flow-matching loss on it."""
    policy = make_policy(seed=0)
    params = list(policy.parameters())
    cfg = RLConfig(algo="filtered_bc", epochs=4, minibatch_size=4)
    g = torch.Generator().manual_seed(0)
    r = rollouts_of(policy, [[0, 1, 2, 3]], [True])
    targets, pads = followed_actions(policy, r, policy.config.n_action_steps)
    batch = {**r.observations, ACTION_KEY: targets, "action_is_pad": pads}
    noise = torch.randn(4, policy.config.chunk_size, policy.config.model_action_dim, generator=g)
    t = torch.rand(4, generator=g)
    with torch.no_grad():
        before = float(policy.eval()(batch, noise=noise, time=t)[0])
    ctx = UpdateContext(policy.train(), torch.optim.AdamW(params, lr=1e-3), params, SamplingSpec("ode"), 0, g)
    for _ in range(5):
        filtered_bc_update(ctx, r, cfg)
    with torch.no_grad():
        after = float(policy.eval()(batch, noise=noise, time=t)[0])
    assert after < 0.7 * before, (before, after)


def test_bad_demo_options_are_explained(tmp_path):
    policy = tmp_path / "policy"
    make_policy(seed=0).save_pretrained(policy)
    with pytest.raises(ConfigError, match="--demos is filtered_bc's demo set; --algo grpo does not use it"):
        run(make_config(policy, tmp_path / "a", "grpo", demos=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"--demos: .*nowhere"):
        run(make_config(policy, tmp_path / "b", "filtered_bc", demos=str(tmp_path / "nowhere"),
                        **{"sampling.mode": "ode"}))
    with pytest.raises(ConfigError, match="--demo_weight must be >= 0"):
        run(make_config(policy, tmp_path / "c", "filtered_bc", demo_weight=-1.0, **{"sampling.mode": "ode"}))


def test_success_buffer_keeps_the_newest_and_survives_a_save(tmp_path):
    from vla.rl.filtered_bc import SuccessBuffer

    small = SuccessBuffer(capacity=3)  # one add larger than the capacity keeps its newest rows, in step
    small.add({"observation.state": torch.arange(5).float()[:, None], "task": list("abcde")})
    assert small.tasks == list("cde") and small.tensors["observation.state"][:, 0].tolist() == [2, 3, 4]
    buffer = SuccessBuffer(capacity=5)
    for start in (0, 3):
        buffer.add({"observation.state": torch.arange(start, start + 3).float()[:, None],
                    "task": [f"t{i}" for i in range(start, start + 3)]})
    assert len(buffer) == 5 and buffer.tasks == ["t1", "t2", "t3", "t4", "t5"]
    assert buffer.tensors["observation.state"][:, 0].tolist() == [1, 2, 3, 4, 5]
    buffer.save(tmp_path)
    again = SuccessBuffer(capacity=5)
    again.load(tmp_path)
    assert again.tasks == buffer.tasks and torch.equal(again.tensors["observation.state"],
                                                       buffer.tensors["observation.state"])
    assert again.batch(torch.tensor([4, 0]))["task"] == ["t5", "t1"]


def test_resume_with_a_success_buffer_reproduces_an_uninterrupted_run(tmp_path):
    from tests.rl.test_rl_trainer import final_state, history

    policy = tmp_path / "policy"
    make_policy(seed=0).save_pretrained(policy)
    options = {"sampling.mode": "ode", "success_buffer": 1000}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(make_config(policy, straight, "filtered_bc", **options))
    run(make_config(policy, resumed, "filtered_bc", stop_after=2, **options))
    assert (resumed / "checkpoints" / "last" / "success_buffer.safetensors").is_file()
    run(make_config(policy, resumed, "filtered_bc", resume=True, **options))
    h = history(straight)
    assert h == history(resumed) and h[-1]["buffer_decisions"] > h[0]["kept_decisions"] > 0
    (w1, o1), (w2, o2) = final_state(straight), final_state(resumed)
    assert all(torch.equal(w1[k], w2[k]) for k in w1) and all(torch.equal(o1[k], o2[k]) for k in o1)
    with pytest.raises(ConfigError, match="--success_buffer is filtered_bc's"):
        run(make_config(policy, tmp_path / "g", "grpo", success_buffer=10))
    options["iterations"] = 5
    with pytest.raises(ConfigError, match="holds a success buffer"):
        run(make_config(policy, resumed, "filtered_bc", resume=True, **{**options, "success_buffer": 0}))
    with pytest.raises(ConfigError, match="resume with --success_buffer=1000"):
        run(make_config(policy, resumed, "filtered_bc", resume=True, **{**options, "success_buffer": 10}))
    with pytest.raises(ConfigError, match="--anchor_coef: filtered_bc has no ratio"):
        run(make_config(policy, tmp_path / "h", "filtered_bc", anchor_coef=1.0, **{"sampling.mode": "ode"}))

"""Rollout engine over a vector env: grouping, storage, determinism."""

import numpy as np
import pytest
import torch

from tests.policy.helpers import make_policy
from tests.rl.fake_env import FakeVectorEnv
from vla.policy.sampling import chain_log_prob
from vla.rl.heads import ValueHead
from vla.rl.rollout import RolloutEngine, SamplingSpec


@pytest.fixture(scope="module")
def policy():
    return make_policy(seed=0).eval()


def collect(policy, seeds=(11, 22, 33), group_size=3, n_envs=4, gen_seed=0, value_head=None, max_steps=8,
            frame_camera="agentview"):
    env = FakeVectorEnv(n_envs, {"max_episode_steps": max_steps})
    engine = RolloutEngine(policy, env, SamplingSpec("sde", "mixed", 0.5), value_head=value_head,
                           frame_camera=frame_camera)
    return engine.collect(list(seeds), group_size, torch.Generator().manual_seed(gen_seed)), env


def test_groups_share_their_initial_state(policy):
    rollouts, env = collect(policy)
    trajs = rollouts.trajectories
    assert len(trajs) == 9
    assert [t.group for t in trajs] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [t.seed for t in trajs] == [11, 11, 11, 22, 22, 22, 33, 33, 33]
    for g in range(3):
        first = [t.frames[0] for t in trajs if t.group == g]
        assert all(np.array_equal(first[0], f) for f in first[1:])
    assert not np.array_equal(trajs[0].frames[0], trajs[3].frames[0])
    # 9 rollouts on 4 envs: three waves, the last padded with the last seed.
    assert env.resets == [[11, 11, 11, 22], [22, 22, 33, 33], [33, 33, 33, 33]]


def test_per_decision_storage_is_consistent(policy):
    rollouts, _ = collect(policy)
    n = len(rollouts)
    c = policy.config
    assert rollouts.chains.shape == (n, c.num_inference_steps + 1, c.chunk_size, c.action_dim)
    assert rollouts.step_masks.shape == (n, c.num_inference_steps) and torch.all(rollouts.step_masks.sum(1) == 1)
    assert rollouts.observations["observation.images.agentview"].dtype == torch.uint8
    assert rollouts.observations["observation.images.agentview"].shape[0] == n
    assert len(rollouts.observations["task"]) == n
    for t in rollouts.trajectories:
        ids = torch.tensor(t.decisions)
        assert torch.all(rollouts.traj_ids[ids] == t.index)
        assert len(t.frames) == len(t.decisions) + 1  # every chunk boundary, initial and final included
        # Done exactly at the last decision; the binary reward only there, and only on success.
        assert rollouts.dones[ids].tolist() == [False] * (len(ids) - 1) + [True]
        assert rollouts.rewards[ids].tolist() == [0.0] * (len(ids) - 1) + [float(t.success)]
        assert t.steps <= 8
    assert sorted(i for t in rollouts.trajectories for i in t.decisions) == list(range(n))
    assert 0 < rollouts.trajectory_success().mean() < 1, "the toy task should give mixed outcomes"
    assert rollouts.env_steps == sum(t.steps for t in rollouts.trajectories)


def test_frames_are_kept_only_when_asked(policy):
    rollouts, _ = collect(policy, frame_camera=None)
    assert all(t.frames == [] for t in rollouts.trajectories)
    with pytest.raises(KeyError, match="frame_camera 'wrist'"):
        collect(policy, frame_camera="wrist")


def test_stored_old_log_probs_match_the_recompute(policy):
    rollouts, _ = collect(policy)
    idx = torch.arange(len(rollouts))
    with torch.no_grad():
        new = chain_log_prob(policy, rollouts.observation_batch(idx), rollouts.chains, rollouts.step_masks, "sde", 0.5)
    # Different batch composition than at rollout time: equal up to float rounding.
    torch.testing.assert_close(new, rollouts.log_probs, atol=1e-4, rtol=1e-5)


def test_same_generator_same_rollouts(policy):
    a, _ = collect(policy, gen_seed=5)
    b, _ = collect(policy, gen_seed=5)
    c, _ = collect(policy, gen_seed=6)
    assert torch.equal(a.chains, b.chains) and torch.equal(a.log_probs, b.log_probs)
    assert [t.success for t in a.trajectories] == [t.success for t in b.trajectories]
    assert not torch.equal(a.chains[:3], c.chains[:3])


def test_values_come_from_the_value_head(policy):
    head = ValueHead(policy.config.width, policy.config.state_dim)
    with torch.no_grad():
        head.net[-1].bias.fill_(0.25)
    rollouts, _ = collect(policy, value_head=head)
    torch.testing.assert_close(rollouts.values, torch.full((len(rollouts),), 0.25))
    without, _ = collect(policy)
    assert torch.all(without.values == 0)


class _LosesOneEpisode(FakeVectorEnv):
    """Env 1's worker is 'lost' on its second chunk of the first wave (as VectorEnv's watchdog reports it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunks = 0

    def step_chunk(self, actions, record=None, active=None):
        outs = super().step_chunk(actions, record, active)
        self.chunks += 1
        if self.chunks == 2 and outs[1] is not None:
            obs = outs[1][0]
            outs[1] = (obs, 0.0, True, True, {"is_success": False, "steps": 0, "rewards": [],
                                              "infra_failure": True, "infra_reason": "worker killed (test)"})
        return outs


def test_lost_episodes_are_dropped_not_scored_as_failures(policy):
    env = _LosesOneEpisode(4, {"max_episode_steps": 8, "goal": 5.0})  # unreachable goal: episodes run 4 chunks
    env.goal = 5.0
    engine = RolloutEngine(policy, env, SamplingSpec("sde", "mixed", 0.5))
    rollouts = engine.collect([11, 22], 2, torch.Generator().manual_seed(0))
    trajs = rollouts.trajectories
    assert len(trajs) == 3  # rollout 1 (group 0) was lost
    assert [t.group for t in trajs] == [0, 1, 1]
    assert [t.index for t in trajs] == [0, 1, 2]
    assert sorted(i for t in trajs for i in t.decisions) == list(range(len(rollouts)))
    for t in trajs:
        assert torch.all(rollouts.traj_ids[torch.tensor(t.decisions)] == t.index)

"""The data-parallel learner: a GRPO update split over 2 gloo processes (torch.multiprocessing spawn,
CPU) takes the single-process steps: the summed gradient is the single-process one, and both
processes end with the single process's weights, gradient accumulation included."""

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.policy.helpers import make_policy
from tests.rl.fake_env import FakeVectorEnv
from vla.config import RLConfig
from vla.rl.distributed import broadcast_parameters, data_parallel, minibatch_mean, shard, split_of
from vla.rl.grpo import grpo_update
from vla.rl.rollout import RolloutEngine, SamplingSpec
from vla.rl.update import UpdateContext

SAMPLING = SamplingSpec("sde", "mixed", 0.5)
WORLD = 2


def setup():
    """Policy and rollouts, the same in every process (the toy env and all seeds are fixed)."""
    torch.set_num_threads(1)
    policy = make_policy(seed=0)
    engine = RolloutEngine(policy.eval(), FakeVectorEnv(4, {"max_episode_steps": 8}), SAMPLING)
    rollouts = engine.collect([11, 22, 33, 44], 4, torch.Generator().manual_seed(0))
    cfg = RLConfig(epochs=2, minibatch_size=9, grad_accumulation=2, dynamic_sampling=False)
    return policy, rollouts, cfg


def update(policy, rollouts, cfg, first_step_grads=None):
    params = list(policy.parameters())
    # SGD: the step is the gradient itself (Adam's sign-like steps would hide a wrong scale)
    ctx = UpdateContext(policy.train(), torch.optim.SGD(params, lr=0.5), params, SAMPLING, 0,
                        torch.Generator().manual_seed(1))
    if first_step_grads is not None:  # keep the first optimizer step's (summed) gradient
        step = ctx.optimizer.step

        def record_then_step(*args, **kwargs):
            if not first_step_grads:
                first_step_grads.append(torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]))
            return step(*args, **kwargs)

        ctx.optimizer.step = record_then_step
    stats = grpo_update(ctx, rollouts, cfg)
    return stats


def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        assert data_parallel() == (rank, WORLD)
        part, weight = shard(torch.arange(9), 1.0)  # each process computes its share only
        assert part.tolist() == ([0, 1, 2, 3, 4] if rank == 0 else [5, 6, 7, 8]) and weight == part.numel() / 9
        assert split_of(part.numel()) == ((0, 9) if rank == 0 else (5, 9))  # per-decision draws: the whole 9
        assert minibatch_mean(float(rank + 1)) == pytest.approx(5 / 9 * 1 + 4 / 9 * 2)  # share-weighted, same on both
        policy, rollouts, cfg = setup()
        broadcast_parameters(list(policy.parameters()))
        grads = []
        stats = update(policy, rollouts, cfg, grads)
        torch.save({"grad": grads[0], "weights": policy.state_dict(), "steps": stats["optimizer_steps"]},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_two_gloo_processes_step_like_one(tmp_path):
    policy, rollouts, cfg = setup()
    before = copy.deepcopy(policy.state_dict())
    grads = []
    stats = update(policy, rollouts, cfg, grads)
    assert stats["optimizer_steps"] >= 4  # 2 epochs, several accumulated steps each
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    floats = [k for k, v in before.items() if v.is_floating_point()]
    moved = max(float((policy.state_dict()[k] - before[k]).abs().max()) for k in floats)
    assert moved > 1e-3
    for r in ranks:
        assert r["steps"] == stats["optimizer_steps"]
        assert torch.allclose(r["grad"], grads[0], rtol=1e-4, atol=1e-6)  # the summed gradient is the whole one
        gap = max(float((r["weights"][k] - policy.state_dict()[k]).abs().max()) for k in floats)
        assert gap < 1e-4 * moved, (gap, moved)
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in floats)  # replicas equal


def test_a_single_process_update_is_not_sharded():
    assert data_parallel() is None
    idx = torch.arange(5)
    assert shard(idx, 0.5) == (idx, 0.5)
    assert split_of(5) == (0, 5) and minibatch_mean(0.25) == 0.25

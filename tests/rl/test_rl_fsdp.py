"""The FSDP learner (vla/rl/fsdp.py, `vla rl --fsdp=true`): a GRPO update of the tiny VLA with its blocks, root
and optimizer state sharded over 2 gloo processes (torch.multiprocessing spawn, CPU) against the same update in
one process. NCCL / GPUs are not tested here (no GPU).

One spawn covers:
1. one optimizer step (the whole batch as one minibatch, SGD so a wrong gradient scale shows) gives the
   1-process weights;
2. the same step as 2 accumulated micro-batches gives them too, and reduce-scatters only in the second
   micro-batch's backward (as many reduce-scatters as the un-accumulated step: no sync inside the accumulation);
3. each process holds about half of the parameters (and of AdamW's moments);
4. a checkpoint written by rank 0 (save_training_checkpoint, as `vla rl` does) loads with the normal loader and
   equals the gathered weights, its optimizer file equals the 1-process optimizer's, and resuming from it (fresh
   sharded learner, optimizer restored through FullStateOptimizer) continues like the 1-process run.
"""

import copy
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.policy.helpers import make_policy, make_state_policy
from tests.rl.fake_env import FakeVectorEnv
from vla.config import RLConfig
from vla.policy.registry import load_policy
from vla.rl import distributed
from vla.rl.fsdp import FSDPLearner, FullStateOptimizer, blocks_of, full_state_dict
from vla.rl.grpo import grpo_update
from vla.rl.rollout import RolloutEngine, SamplingSpec
from vla.rl.update import UpdateContext
from vla.train.checkpoint import OPTIMIZER_FILE, POLICY_DIR, restore_training_state, save_training_checkpoint

SAMPLING = SamplingSpec("sde", "mixed", 0.5)
WORLD = 2


def rollouts_and_sizes():
    torch.set_num_threads(1)
    engine = RolloutEngine(make_policy(seed=0).eval(), FakeVectorEnv(4, {"max_episode_steps": 8}), SAMPLING)
    rollouts = engine.collect([11, 22, 33, 44], 4, torch.Generator().manual_seed(0))
    n = len(rollouts)
    whole = RLConfig(epochs=1, minibatch_size=n, grad_accumulation=1, dynamic_sampling=False)
    halves = RLConfig(epochs=1, minibatch_size=math.ceil(n / 2), grad_accumulation=2, dynamic_sampling=False)
    return rollouts, whole, halves


def update(policy, rollouts, cfg, optimizer_cls=torch.optim.SGD, optimizer=None, seed=1):
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = optimizer or optimizer_cls(params, lr=0.5 if optimizer_cls is torch.optim.SGD else 1e-3)
    ctx = UpdateContext(policy.train(), optimizer, params, SAMPLING, 0, torch.Generator().manual_seed(seed))
    stats = grpo_update(ctx, rollouts, cfg)
    return stats, optimizer


def count_reduce_scatters():
    """Count reduce-scatter collectives (FSDP's gradient reduction) from now on."""
    calls = [0]
    for name in ("reduce_scatter_single", "reduce_scatter_tensor"):
        original = getattr(dist, name, None)
        if original is None:
            continue

        def counted(*args, _original=original, **kwargs):
            calls[0] += 1
            return _original(*args, **kwargs)

        setattr(dist, name, counted)
    return calls


def sharded(seed=0):
    policy = make_policy(seed=seed)
    return policy, FSDPLearner(policy, None, None, "cpu")


def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rollouts, whole, halves = rollouts_and_sizes()
        result = {}
        calls = count_reduce_scatters()
        # 1. one step, whole batch
        policy, learner = sharded()
        result["numel"] = learner.shard_numel()
        result["blocks"] = learner.n_blocks
        stats, _ = update(policy, rollouts, whole)
        result["steps_whole"], result["rs_whole"] = stats["optimizer_steps"], calls[0]
        result["whole"] = full_state_dict(policy)
        # 2. the same step as 2 accumulated micro-batches
        calls[0] = 0
        policy, learner = sharded()
        stats, _ = update(policy, rollouts, halves)
        result["steps_halves"], result["rs_halves"] = stats["optimizer_steps"], calls[0]
        result["halves"] = full_state_dict(policy)
        # 3./4. AdamW: sharded moments, a checkpoint from rank 0, a resume
        policy, learner = sharded()
        _, optimizer = update(policy, rollouts, whole, torch.optim.AdamW)
        moments = [s["exp_avg"] for s in optimizer.state.values()]
        result["moments"] = (sum(m.to_local().numel() for m in moments), sum(m.numel() for m in moments))
        learner.sync_rollout_copy()
        result["gathered"] = full_state_dict(policy)
        saved = learner.gathered_optimizer(optimizer)  # every rank gathers, rank 0 writes
        if rank == 0:
            copy_policy = learner.rollout_modules()[0]
            result["copy_equal"] = all(torch.equal(copy_policy.state_dict()[k], v)
                                       for k, v in result["gathered"].items())
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
            save_training_checkpoint(f"{out_dir}/ckpt", copy_policy, saved, scheduler, torch.Generator(), 1, [])
        dist.barrier()
        update(policy, rollouts, whole, optimizer=optimizer, seed=2)  # the uninterrupted run's second update
        result["uninterrupted"] = full_state_dict(policy)
        resumed = load_policy(f"{out_dir}/ckpt/{POLICY_DIR}")
        learner = FSDPLearner(resumed, None, None, "cpu")
        optimizer = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
        restore_training_state(f"{out_dir}/ckpt", FullStateOptimizer(optimizer), scheduler, torch.Generator())
        update(resumed, rollouts, whole, optimizer=optimizer, seed=2)
        result["resumed"] = full_state_dict(resumed)
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        distributed.use_fsdp(None)
        dist.destroy_process_group()


def gap(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in b if b[k].is_floating_point())


@pytest.mark.timeout(300)
def test_fsdp_update_accumulation_memory_and_checkpoint(tmp_path):
    rollouts, whole, halves = rollouts_and_sizes()
    before = make_policy(seed=0).state_dict()
    one = make_policy(seed=0)
    stats, _ = update(one, rollouts, whole)
    assert stats["optimizer_steps"] == 1
    alone_halves = make_policy(seed=0)
    assert update(alone_halves, rollouts, halves)[0]["optimizer_steps"] == 1
    adam = make_policy(seed=0)
    _, optimizer = update(adam, rollouts, whole, torch.optim.AdamW)
    adam_state = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    update(adam, rollouts, whole, optimizer=optimizer, seed=2)  # the uninterrupted second update
    adam_moved = gap(adam.state_dict(), before)

    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    moved = gap(one.state_dict(), before)
    assert moved > 1e-3
    for r in ranks:
        # 1. one FSDP step = the 1-process step (float summation order only)
        assert r["steps_whole"] == 1 and gap(r["whole"], one.state_dict()) < 1e-4 * moved
        # 2. accumulated = un-accumulated, in one process and under FSDP; no reduce-scatter inside the accumulation
        assert gap(alone_halves.state_dict(), one.state_dict()) < 1e-4 * moved
        assert r["steps_halves"] == 1 and gap(r["halves"], one.state_dict()) < 1e-4 * moved
        assert r["rs_whole"] > 0 and r["rs_halves"] == r["rs_whole"]
        # 3. half the parameters and half of AdamW's moments per process
        local, total = r["numel"]
        assert r["blocks"] == len(blocks_of(make_policy())) == 5  # 1 vision + 2 prefix + 2 expert blocks
        assert total == sum(p.numel() for p in one.parameters()) and abs(local - total / 2) < 0.01 * total
        local_m, total_m = r["moments"]
        assert total_m == total and abs(local_m - total_m / 2) < 0.01 * total_m
        # 4. resumed from the checkpoint = the uninterrupted FSDP run (the same arithmetic) = the 1-process run
        # up to rounding (Adam divides gradients near zero by their tiny moments: a looser bound than SGD's)
        assert gap(r["resumed"], r["uninterrupted"]) < 1e-6 * adam_moved
        assert gap(r["resumed"], adam.state_dict()) < 1e-2 * adam_moved
    assert ranks[0]["numel"][0] + ranks[1]["numel"][0] == ranks[0]["numel"][1]  # the shards partition the weights
    # 4. rank 0's checkpoint: the normal loader, the gathered weights, the 1-process optimizer state's layout
    assert ranks[0]["copy_equal"]
    loaded = load_policy(tmp_path / "ckpt" / POLICY_DIR).state_dict()
    gathered = ranks[0]["gathered"]
    assert loaded.keys() == gathered.keys() and all(torch.equal(loaded[k], gathered[k]) for k in loaded)
    saved_opt = load_file(str(tmp_path / "ckpt" / OPTIMIZER_FILE))
    assert len(saved_opt) == 3 * len([p for p in one.parameters() if p.requires_grad])  # step, exp_avg, exp_avg_sq
    for key, value in adam_state.items():
        assert torch.allclose(saved_opt[f"state/0/{key}"], value, rtol=1e-4, atol=1e-7), key


FLAGS = ["--iterations=2", "--n_groups=1", "--group_size=2", "--n_envs=2", "--env.max_episode_steps=12",
         "--minibatch_size=4", "--grad_accumulation=2", "--epochs=1", "--dynamic_sampling=false", "--reward=shaped",
         "--lr=0.003", "--eval.n_episodes=1", "--num_threads=1", "--value_hidden=16"]


@pytest.mark.timeout(300)
def test_vla_rl_fsdp_under_torchrun(tmp_path):
    """`vla rl --fsdp=true` under torchrun on a real Lift: PPO (a value head, sharded too) with gradient
    accumulation, on the tiny state policy (the VLA renders cameras: too slow here; its blocks are covered
    above). The run completes, writes the files of a 1-process run and ends at its weights."""
    pytest.importorskip("robosuite")
    from vla.cli import main

    make_state_policy(seed=0).save_pretrained(tmp_path / "sft")
    common = ["rl", "--algo=ppo", f"--policy={tmp_path / 'sft'}", *FLAGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env.pop("WORLD_SIZE", None)
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                            "-m", "vla.cli", *common, "--fsdp=true", f"--output_dir={tmp_path / 'fsdp'}"], env=env,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = run.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        run.terminate()  # torchrun stops its ranks
        run.communicate(timeout=60)
        raise
    assert run.returncode == 0, stdout[-3000:] + stderr[-5000:]
    assert "FSDP over 2 processes" in stdout
    assert main([*common, f"--output_dir={tmp_path / 'one'}"]) == 0

    def files(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and "tb" not in p.parts)

    assert files(tmp_path / "fsdp") == files(tmp_path / "one")
    for name in ("policy/model.safetensors", "checkpoints/last/optimizer.safetensors"):
        a, b = (load_file(tmp_path / d / name) for d in ("one", "fsdp"))
        assert a.keys() == b.keys()
        assert all(torch.allclose(b[k].float(), a[k].float(), rtol=1e-4, atol=1e-6) for k in a), name
    heads = [p.name for p in (tmp_path / "fsdp" / "policy").iterdir()]
    assert any("value" in h for h in heads), heads  # the (sharded) value head is saved in full beside the policy


def test_fsdp_needs_torchrun(tmp_path, monkeypatch, capsys):
    from vla.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["rl", "--fsdp=true", f"--policy={tmp_path / 'p'}", f"--output_dir={tmp_path / 'run'}"]) == 2
    assert "--fsdp=true shards the learner" in capsys.readouterr().err

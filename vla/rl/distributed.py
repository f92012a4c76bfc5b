"""Data-parallel learner: the on-policy update split over torch.distributed processes (DDP's scheme).

Under ``torchrun`` (or any code that has called ``torch.distributed.init_process_group``) every
process holds the same rollouts and the same weights and draws the same minibatch shuffles (the
update's generator is seeded alike). Each minibatch is then split over the processes: each computes
the loss of its share of the decisions, weighted by that share, and after the last minibatch of an
optimizer step (gradient accumulation included) the gradients are summed across processes. The sum
is the gradient of the whole minibatch's mean loss, the single-process one, so every process takes
the same optimizer step and the weights stay equal without being sent again.

Why not ``DistributedDataParallel``: its gradient hooks fire only through ``module.forward``, and the
RL losses call the policy's own methods (encode, velocity) instead; summing the gradients before the
step is the same reduction without that constraint, and the algorithms (grpo.py, ppo.py, ...) do not
change at all: update.py's epoch_minibatches and optimizer_step call this module.

Exact for losses that are means over a minibatch's decisions (all of the RL core's). The two per-minibatch
quantities that are not such means are made rank-independent here: the ``target_kl`` stop compares the
minibatch's approximate KL summed over the shares (``minibatch_mean``), so every process stops at the same
minibatch, and the velocity anchor draws its random denoising steps for the whole minibatch and keeps its
share's (``split_of``), so the run's generator advances alike everywhere.

``vla rl`` under torchrun (``join_from_env``): rank 0 collects the rollouts (its env workers, local or Ray)
and sends them with the generator's state to the other ranks (``broadcast_from_main``); every rank then runs
the unchanged update on its shares, and only rank 0 writes (``is_main``). See docs/SCALING.md.
"""

from __future__ import annotations

import io
import os

import torch
import torch.distributed as dist

# The FSDP learner (vla/rl/fsdp.py) when the policy is sharded: its units reduce-scatter their own gradients.
_fsdp_learner = None

# (offset, count, total) of the share of a minibatch that shard() handed out last: the update's per-minibatch
# code runs between two shard() calls (epoch_minibatches is a generator), so it describes the current minibatch.
_split: tuple[int, int, int] | None = None


def data_parallel() -> tuple[int, int] | None:
    """(rank, world size) when more than one process shares the update, else None."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


def shard(idx: torch.Tensor, weight: float) -> tuple[torch.Tensor, float]:
    """This process's share of a minibatch's decisions and its weight in the optimizer step.

    A minibatch smaller than the process count is not split: every process computes all of it,
    each with 1 / world of the weight, so the sum is the same.
    """
    global _split
    group = data_parallel()
    if group is None:
        return idx, weight
    rank, world = group
    if idx.numel() < world:
        _split = (0, idx.numel(), idx.numel())
        return idx, weight / world
    parts = idx.tensor_split(world)
    part = parts[rank]
    _split = (sum(p.numel() for p in parts[:rank]), part.numel(), idx.numel())
    return part, weight * part.numel() / idx.numel()


def split_of(n: int) -> tuple[int, int]:
    """(offset, total): where this process's n decisions sit in the whole current minibatch of total
    decisions; (0, n) alone. A draw of one random number per decision draws total and keeps [offset, offset+n)."""
    if data_parallel() is None or _split is None or _split[1] != n:
        return 0, n
    return _split[0], _split[2]


def minibatch_mean(value: float) -> float:
    """The whole current minibatch's mean of a per-decision statistic of which this process has the mean
    over its share (the share-weighted sum over processes; every process gets the same number)."""
    if data_parallel() is None or _split is None:
        return value
    offset, count, total = _split
    world = dist.get_world_size()
    weight = 1.0 / world if count == total else count / total  # an unsplit minibatch: every process has all of it
    t = torch.tensor([value * weight], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t)


def use_fsdp(learner) -> None:
    """Register the FSDP learner (vla/rl/fsdp.py; None: none): its sharded parameters' gradients are summed by
    FSDP's reduce-scatter in the backward, and before_backward switches that off within an accumulation."""
    global _fsdp_learner
    _fsdp_learner = learner


def before_backward(last: bool) -> None:
    """Called before each minibatch's backward; last: the last minibatch of its optimizer step. Under FSDP,
    only that backward reduce-scatters (the others accumulate locally, FSDP's no_sync); otherwise nothing."""
    if _fsdp_learner is not None:
        _fsdp_learner.gradient_sync(last)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over the processes (one flat buffer: one message per step).
    FSDP-sharded parameters (DTensors) are left out: their backward already summed them."""
    if data_parallel() is None:
        return
    if _fsdp_learner is not None:
        from torch.distributed.tensor import DTensor
        params = [p for p in params if not isinstance(p, DTensor)]
    # A parameter no process touched keeps grad None, as it would alone (the optimizer then skips it,
    # where a zero gradient would still decay it and move its Adam moments).
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    dist.all_reduce(used, op=dist.ReduceOp.SUM)
    reduced = [p for p, u in zip(params, used.tolist()) if u]
    if not reduced:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in reduced]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in reduced:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def broadcast_parameters(params: list[torch.nn.Parameter], src: int = 0) -> None:
    """Give every process rank ``src``'s weights (once, at start; the steps then keep them equal)."""
    if data_parallel() is None:
        return
    from torch.distributed.tensor import DTensor
    with torch.no_grad():
        for p in params:
            if not isinstance(p, DTensor):  # FSDP shards are each process's own
                dist.broadcast(p.data, src)


def join_from_env(device: str) -> tuple[str, bool]:
    """Join the torch.distributed process group torchrun describes (WORLD_SIZE > 1 in the environment).

    CPU: gloo. CUDA: NCCL for the CUDA tensors (gradients) and gloo for the CPU ones (flags, rollouts), and
    the device becomes cuda:LOCAL_RANK, one GPU per process. Returns (device, joined): joined is True when
    this call initialised the group (leave() it at the end); an already initialised group is used as it is."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return device, False
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device, False
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    return device, True


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0, and in a single process: the process that writes checkpoints, logs and the summary."""
    group = data_parallel()
    return group is None or group[0] == 0


def broadcast_from_main(obj, device: str | torch.device):
    """Rank 0's obj on every rank (serialised with torch.save; tensors land on `device`). Alone: obj."""
    if data_parallel() is None:
        return obj
    payload = [None]
    if is_main():
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        payload = [buffer.getvalue()]
    dist.broadcast_object_list(payload, src=0)
    if is_main():
        return obj
    return torch.load(io.BytesIO(payload[0]), map_location=device, weights_only=False)


def mean_over_ranks(stats: dict) -> dict:
    """Each float statistic averaged over the processes (each computed its own shares of the minibatches);
    keys that not every process has are kept as this process's. Alone: stats."""
    if data_parallel() is None:
        return stats
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, stats)
    out = dict(stats)
    for key, value in stats.items():
        values = [g.get(key) for g in gathered]
        if isinstance(value, float) and all(isinstance(v, float) for v in values):
            out[key] = sum(values) / len(values)
    return out

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

Exact for losses that are means over a minibatch's decisions (all of the RL core's); statistics that
decide control flow per minibatch (``target_kl``) are per process, so keep target_kl at 0 there.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


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
    group = data_parallel()
    if group is None:
        return idx, weight
    rank, world = group
    if idx.numel() < world:
        return idx, weight / world
    part = idx.tensor_split(world)[rank]
    return part, weight * part.numel() / idx.numel()


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over the processes (one flat buffer: one message per step)."""
    if data_parallel() is None:
        return
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
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src)

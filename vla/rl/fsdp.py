"""FSDP learner (`--fsdp=true` under torchrun): the policy's parameters, gradients and optimizer state sharded
over the processes with PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``), for policies whose replica
per process does not fit (pi0-size: 3.3B parameters). The RL algorithms do not change.

What is sharded, and how it is reached:
- **Blocks.** Every element of an ``nn.ModuleList`` named ``layers`` is one FSDP unit: the prefix (VLM) and
  action-expert blocks of the pi0-style policy (vla/policy/flow_vla/transformer.py), the vision tower's encoder
  layers, SmolVLA's blocks. Each is all-gathered just before it runs and freed after (forward and backward).
  The VLA's transformer runs a block through ``self._run(self._block, layer, ...)`` (not ``layer(...)``), so
  FSDP's forward hooks would never fire: ``_route_blocks`` sends those calls through a method of the layer that
  ``register_fsdp_forward_method`` hooks (gradient checkpointing still wraps the call). The policy code is
  unchanged.
- **The rest of the policy** (embeddings, projections, final norms, the vision tower's stem) is the root unit.
  The algorithms call the policy's own methods (encode_observation, velocity, ...) rather than ``forward``;
  those are registered as forward methods. The root keeps its parameters gathered from its first forward until
  the backward is done (``reshard_after_forward=False``), so methods that call each other are safe.
- **Heads** (value head, Flow-Noise head): one unit each.

Gradients: FSDP reduce-scatters each unit's gradient after its backward. Each process's loss is already
weighted by its share of the minibatch (vla/rl/distributed.py), so the reduction is a sum
(``set_gradient_divide_factor(1)``), as in the gradient-summing learner; clipping and the optimizer then run on
the shards (AdamW's moments are sharded like the parameters). Gradient accumulation: before the backward of a
minibatch that is not the last of its optimizer step, ``set_requires_gradient_sync(False)`` keeps the gradient
unsharded and local (no communication); the last minibatch's backward syncs the accumulated sum.

Rollouts: rank 0 collects alone, so it cannot run the sharded policy (every process would have to join each
all-gather). It keeps a plain full copy (made before sharding); after every update all processes gather the
full weights and rank 0 loads them into the copy (``sync_rollout_copy``). The copy is what rank 0 collects
with, evaluates and saves, so checkpoints and the final policy are the same safetensors files as without FSDP.
The optimizer state is gathered into the same per-parameter layout as the unsharded optimizer's
(``FullStateOptimizer``), so a checkpoint resumes with or without FSDP, at any process count.
"""

from __future__ import annotations

import copy
import os
import types
import warnings

import torch
import torch.distributed as dist
from torch import nn

# methods through which the algorithms and the rollouts reach the policy's root parameters
ENTRY_METHODS = ("forward", "encode_observation", "encode_prefix_and_state", "embed_prefix", "explore_observation",
                 "think", "velocity", "future_image_features", "sample_actions", "integrate", "predict_action_chunk")


def validate_fsdp(cfg) -> None:
    """Refuse --fsdp where it cannot work (messages name the flag)."""
    from vla.config import ConfigError
    if not cfg.fsdp:
        return
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise ConfigError("--fsdp=true shards the learner over torchrun's processes; run it under torchrun "
                          "(WORLD_SIZE > 1), or drop the flag for one process")
    if cfg.project_out_blind:
        raise ConfigError("--project_out_blind takes per-parameter gradients with torch.autograd.grad, which "
                          "FSDP's sharded parameters do not receive; use it without --fsdp")


def _fsdp():
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
    return FSDPModule, fully_shard, register_fsdp_forward_method


def blocks_of(module: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a policy: the elements of every ModuleList named `layers`, outermost first."""
    found = []
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers":
            found.extend(child)
    return found


def _route_blocks(policy: nn.Module, blocks: set[nn.Module]) -> None:
    """Make the VLA transformers' block calls (``_run(fn, layer, ...)``) go through a hooked method of the layer."""
    _, _, register = _fsdp()
    for layer in blocks:
        layer.fsdp_block = types.MethodType(lambda self, fn, *args, **kwargs: fn(self, *args, **kwargs), layer)
        register(layer, "fsdp_block")
    for module in policy.modules():
        run = getattr(module, "_run", None)
        if run is None or not callable(run) or not hasattr(module, "gradient_checkpointing"):
            continue

        def routed(fn, *args, _run=run, **kwargs):
            if args and args[0] in blocks:  # a block: its FSDP hooks gather its parameters around the call
                layer = args[0]
                return _run(layer.fsdp_block, fn, *args[1:], **kwargs)
            return _run(fn, *args, **kwargs)

        module._run = routed


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered to a plain tensor (a collective: every process calls it); a plain tensor as it is."""
    return t.full_tensor() if _is_dtensor(t) else t


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict with every sharded tensor gathered (every process calls it)."""
    return {k: _full(v).detach() for k, v in module.state_dict().items()}


class FSDPLearner:
    """The sharded learner modules and rank 0's full rollout copies. Build it after the policy, its heads and
    any resumed weights are loaded, before the optimizer (which must hold the sharded parameters)."""

    def __init__(self, policy: nn.Module, noise_head: nn.Module | None, value_head: nn.Module | None,
                 device: str | torch.device):
        from torch.distributed.device_mesh import init_device_mesh
        from vla.rl.distributed import broadcast_parameters, is_main

        _, fully_shard, register = _fsdp()
        # FSDP2 warns about every block that returns a view (k, v, cached prefixes); the policy never writes into
        # them in place, which is the case the warning is about
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        modules = [m for m in (policy, noise_head, value_head) if m is not None]
        # every process starts from rank 0's weights (they agree already: same files, same seed), then shards them
        broadcast_parameters([p for m in modules for p in m.parameters()])
        main = is_main()
        self.policy, self.noise_head, self.value_head = policy, noise_head, value_head
        # rank 0 collects, evaluates and saves with full copies (the sharded modules need every process)
        self.rollout_policy = copy.deepcopy(policy) if main else None
        self.rollout_noise_head = copy.deepcopy(noise_head) if main and noise_head is not None else None
        self.rollout_value_head = copy.deepcopy(value_head) if main and value_head is not None else None
        device = torch.device(device)
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        self.units = []
        blocks = blocks_of(policy)
        for block in reversed(blocks):  # bottom-up, as fully_shard wants
            self.units.append(fully_shard(block, mesh=mesh, reshard_after_forward=True))
        self.units.append(fully_shard(policy, mesh=mesh, reshard_after_forward=False))
        for name in ENTRY_METHODS:
            if callable(getattr(policy, name, None)) and name != "forward":
                register(policy, name)
        _route_blocks(policy, set(blocks))
        for head in (noise_head, value_head):
            if head is not None:
                self.units.append(fully_shard(head, mesh=mesh, reshard_after_forward=False))
        for unit in self.units:
            # each process's loss is share-weighted: sum, do not average (a plain SUM: gloo has no PREMUL_SUM)
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)
        self.n_blocks = len(blocks)
        local, total = self.shard_numel()
        print(f"FSDP over {dist.get_world_size()} processes: {len(blocks)} blocks + root"
              f"{' + heads' if noise_head is not None or value_head is not None else ''}, this process holds "
              f"{local / 1e6:.2f}M of {total / 1e6:.2f}M parameters")
        from vla.rl.distributed import use_fsdp
        use_fsdp(self)

    def rollout_modules(self) -> tuple:
        """(policy, noise head, value head) for collecting, evaluating and saving: rank 0's full copies. The
        other ranks never collect; they get the sharded modules (for train()/eval() and the like)."""
        if self.rollout_policy is None:
            return self.policy, self.noise_head, self.value_head
        return self.rollout_policy, self.rollout_noise_head, self.rollout_value_head

    def gathered_optimizer(self, optimizer: torch.optim.Optimizer) -> "GatheredOptimizer":
        """The optimizer's full state, gathered now (every process calls it), for rank 0's checkpoint."""
        return GatheredOptimizer(FullStateOptimizer(optimizer).state_dict())

    # ---- gradient accumulation
    def gradient_sync(self, sync: bool) -> None:
        """Reduce-scatter in the coming backward (True: the last minibatch of an optimizer step) or only
        accumulate the local unsharded gradient (False)."""
        for unit in self.units:
            unit.set_requires_gradient_sync(sync, recurse=False)

    # ---- rank 0's full copies
    def sync_rollout_copy(self) -> None:
        """Gather the full weights (every process calls it) into rank 0's rollout copies."""
        for unit in self.units:  # a unit gathered in a forward without backward (no_grad) frees its full weights
            unit.reshard()
        for sharded, full in ((self.policy, self.rollout_policy), (self.noise_head, self.rollout_noise_head),
                              (self.value_head, self.rollout_value_head)):
            if sharded is None:
                continue
            state = full_state_dict(sharded)
            if full is not None:
                full.load_state_dict(state)
                full.eval()

    def shard_numel(self) -> tuple[int, int]:
        """(parameters this process holds, parameters of the whole policy and heads)."""
        local = total = 0
        for m in (self.policy, self.noise_head, self.value_head):
            if m is None:
                continue
            for p in m.parameters():
                total += p.numel()
                local += p.to_local().numel() if _is_dtensor(p) else p.numel()
        return local, total


class GatheredOptimizer:
    """A gathered optimizer state: what save_training_checkpoint reads (state_dict())."""

    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


class FullStateOptimizer:
    """The sharded optimizer seen with full states: state_dict() gathers every DTensor state into a plain
    tensor (a collective: every process calls it; the layout is the unsharded optimizer's, so checkpoints are
    interchangeable); load_state_dict() takes full states and keeps this process's shards."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def state_dict(self) -> dict:
        sd = self.optimizer.state_dict()
        state = {pid: {k: _full(v) if torch.is_tensor(v) else v for k, v in s.items()} for pid, s in sd["state"].items()}
        return {"state": state, "param_groups": sd["param_groups"]}

    def load_state_dict(self, sd: dict) -> None:
        from torch.distributed.tensor import distribute_tensor
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        state = {}
        for pid, s in sd["state"].items():
            p = params[int(pid)]
            state[pid] = {k: distribute_tensor(v.to(p.device, p.dtype if v.is_floating_point() else v.dtype),
                                               p.device_mesh, p.placements)
                          if _is_dtensor(p) and torch.is_tensor(v) and v.shape == p.shape else v
                          for k, v in s.items()}
        self.optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})

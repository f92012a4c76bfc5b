"""Filtered behaviour cloning on a flow policy: imitate the policy's own successful rollouts.

docs/ALGORITHMS.md section 2c. One update, top to bottom:
1. keep the decisions of this iteration's successful trajectories (reward-weighted regression with a
   binary reward: weight 1 on success, 0 otherwise; no ratio, no advantage, no log-prob);
2. each kept decision's target chunk is what actually followed its observation: the rows it executed,
   then the rows the next decision executed, padded after the trajectory's last decision;
3. with `success_buffer` > 0, the kept decisions join those of earlier iterations (the newest
   success_buffer of them), and as many are drawn from the whole buffer as this iteration kept;
4. epochs of shuffled minibatches of them take steps of the SFT flow-matching loss, each
   minibatch joined by as many demonstration frames (weight demo_weight), which keep the policy on
   what it was taught while its own successes reshape it.

Why this and not only GRPO/PPO here: a policy-gradient update on a few hundred decisions follows
mostly noise (BENCHMARKS.md, "RL post-training on Lift"), while this is the loss the policy was
trained with, on examples the reward vouches for; the flow noise and time come from the run's
generator, so a resumed run repeats the same steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vla.policy.flow_matching_policy import ACTION_KEY, ENV_STATE_KEY, IMAGE_PREFIX, PAD_KEY, STATE_KEY
from vla.rl.rollout import Rollouts
from vla.rl.update import UpdateContext, epoch_minibatches, optimizer_step, update_summary


def followed_actions(policy, rollouts: Rollouts, n_exec: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per decision: the un-normalised chunk of actions that followed its observation [N, H, A], and its
    padding mask [N, H] (True past what the trajectory executed). A trajectory's last decision may have
    run fewer than n_exec rows (success or the time limit ended the episode inside its chunk)."""
    chains = rollouts.chains[:, -1].float().to(policy.device)
    chunks = policy.normalizer.unnormalize(ACTION_KEY, chains).cpu()
    horizon = chunks.shape[1]
    targets = chunks.clone()
    pads = torch.zeros(chunks.shape[:2], dtype=torch.bool)
    for traj in rollouts.trajectories:
        last = len(traj.decisions) - 1
        # rows each decision executed: n_exec, and whatever the episode had left for the last one
        ran = [n_exec] * last + [min(n_exec, max(1, traj.steps - n_exec * last))] if traj.decisions else []
        for j, i in enumerate(traj.decisions):
            rows = ran[j]
            for k in range(j + 1, len(traj.decisions)):  # a chunk longer than two decisions reaches further
                take = min(ran[k], horizon - rows)
                if take <= 0:
                    break
                targets[i, rows:rows + take] = chunks[traj.decisions[k], :take]
                rows += take
            pads[i, rows:] = True
    return targets, pads


class DemoFrames:
    """The frames of a LeRobot dataset, drawn as policy batches (the dataset's chunked actions)."""

    def __init__(self, root: str, policy):
        from vla.data.dataset import LeRobotDataset

        self.dataset = LeRobotDataset(root, action_horizon=policy.config.chunk_size)
        c = policy.config
        needs = [IMAGE_PREFIX + cam for cam in c.cameras] + [STATE_KEY]
        if getattr(c, "environment_state_dim", 0):
            needs.append(ENV_STATE_KEY)
        missing = [k for k in needs if k not in self.dataset.features]
        if missing:
            raise ValueError(f"{root}: the demo set has no {missing}, which the policy reads "
                             f"(it has {sorted(self.dataset.features)})")

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, n: int, keys: list[str], generator: torch.Generator) -> dict:
        """n frames drawn with replacement, with the given observation keys (the rollouts' ones)."""
        return self.frames(torch.randint(len(self.dataset), (n,), generator=generator).tolist(), keys)

    def frames(self, idx: list[int], keys: list[str]) -> dict:
        """The frames idx as one policy batch with the given observation keys."""
        items = [self.dataset[i] for i in idx]
        batch = {k: torch.stack([torch.as_tensor(item[k]) for item in items]) for k in keys + [ACTION_KEY, PAD_KEY]}
        batch["task"] = [item["task"] for item in items]
        return batch


class SuccessBuffer:
    """The successful decisions of earlier iterations (observations, targets, padding, task), oldest
    dropped beyond `capacity`; saved in the RL checkpoint so a resumed run replays the same ones."""

    FILE = "success_buffer.safetensors"

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.tensors: dict[str, torch.Tensor] = {}
        self.tasks: list[str] = []

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, batch: dict) -> None:
        for key, value in batch.items():
            if key != "task":
                old = self.tensors.get(key)
                self.tensors[key] = (value if old is None else torch.cat([old, value]))[-self.capacity:].clone()
        self.tasks = (self.tasks + list(batch["task"]))[-self.capacity:]

    def batch(self, idx: torch.Tensor) -> dict:
        return {**{k: v[idx] for k, v in self.tensors.items()}, "task": [self.tasks[i] for i in idx.tolist()]}

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(directory / self.FILE),
                  metadata={"tasks": json.dumps(self.tasks), "capacity": str(self.capacity)})

    def load(self, directory: Path) -> None:
        from safetensors import safe_open

        path = directory / self.FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the checkpoint was written without a success buffer")
        with safe_open(str(path), "pt") as f:
            saved = int(f.metadata()["capacity"])
            if saved != self.capacity:
                raise ValueError(f"{path} was a buffer of {saved} decisions, this run asks for {self.capacity}: "
                                 f"resume with --success_buffer={saved}")
            self.tensors = {k: f.get_tensor(k) for k in f.keys()}
            self.tasks = json.loads(f.metadata()["tasks"])


def _flow_loss(policy, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """The SFT loss; its noise and flow time come from torch's global generators, seeded here from the
    run's generator so that a resumed run draws the same ones."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    devices = [policy.device] if policy.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        loss, _ = policy(batch)
    return loss


def filtered_bc_update(ctx: UpdateContext, rollouts: Rollouts, cfg) -> dict[str, float]:
    """One filtered-BC update from a batch of rollouts; cfg is an RLConfig. Returns statistics."""
    # 1. the decisions of successful trajectories
    success = rollouts.trajectory_success().bool()
    kept = success[rollouts.traj_ids].nonzero().squeeze(1)
    stats = {"kept_trajectories": float(success.sum()), "kept_decisions": float(kept.numel())}
    if kept.numel() == 0:
        return {**stats, "skipped_update": 1.0}

    # 2. what followed each observation
    n_exec = ctx.n_action_steps or ctx.policy.config.n_action_steps
    targets, pads = followed_actions(ctx.policy, rollouts, n_exec)
    keys = [k for k in rollouts.observations if k != "task"]

    # 3. with a success buffer, these join the earlier iterations' successes, and as many examples are
    #    drawn from all of them as this iteration kept (the compute follows the new data)
    source = None
    if ctx.success_buffer is not None:
        ctx.success_buffer.add({**rollouts.observation_batch(kept), ACTION_KEY: targets[kept], PAD_KEY: pads[kept]})
        source = ctx.success_buffer
        kept = torch.randint(len(source), (kept.numel(),), generator=ctx.generator)
        stats["buffer_decisions"] = float(len(source))

    # 4. flow-matching epochs on the kept decisions, each minibatch with as many demo frames
    rows = []
    for mb in epoch_minibatches(kept, cfg.epochs, cfg.minibatch_size, ctx.generator, cfg.grad_accumulation):
        if source is None:
            batch = rollouts.observation_batch(mb.idx)
            batch[ACTION_KEY], batch[PAD_KEY] = targets[mb.idx], pads[mb.idx]
        else:
            batch = source.batch(mb.idx)
        own = _flow_loss(ctx.policy, batch, ctx.generator)
        loss, row = own, {"own_loss": float(own.detach())}
        if ctx.demos is not None and cfg.demo_weight > 0:
            demo = _flow_loss(ctx.policy, ctx.demos.sample(mb.idx.numel(), keys, ctx.generator), ctx.generator)
            loss = own + cfg.demo_weight * demo
            row["demo_loss"] = float(demo.detach())
        row["policy_loss"] = float(loss.detach())
        rows.append({**row, **optimizer_step(ctx, loss, cfg.grad_clip, mb)})
    return {**stats, "skipped_update": 0.0, **update_summary(rows, False)}

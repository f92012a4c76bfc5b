"""Rollout engine: run a stochastic flow policy in a vector env and store what RL needs.

The policy looks only at chunk boundaries ("decisions"): all active envs are
batched into one sampling call, each env executes the first n_action_steps
actions of its chunk, and the engine stores per decision the observation
(images included), the denoising chain, its step mask and old log-prob, the
value (PPO), the binary reward and done flag. Given a ``frame_camera`` (only
SRPO asks), it also keeps per trajectory that camera's frame at every chunk
boundary, initial and final observation included: the frames the env renders
there anyway, so a trajectory's video costs no extra rendering. A state
policy's env renders only the cameras it is given, so SRPO adds its camera
to the env (vla/rl/srpo/setup.py).

Rollouts come in groups: the G rollouts of a group start from the same
initial state (the same reset seed), as GRPO's baseline needs. Episodes run
in waves of ``vec_env.num_envs``; a partial last wave pads the reset with
inactive envs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from vla.policy.flow_matching_policy import ACTION_KEY
from vla.policy.observation import observations_to_batch
from vla.policy.sampling import NoiseHead, sample_chain


@dataclass
class SamplingSpec:
    """How rollouts sample actions (vla.policy.sampling.sample_chain's arguments)."""

    mode: str = "sde"
    sde_mode: str = "mixed"
    noise_level: float = 0.5
    mixed_steps: int = 0  # mixed mode: the stochastic step is one of the first mixed_steps (0 = any)


@dataclass
class Trajectory:
    index: int
    group: int
    seed: int
    task: str
    success: bool = False
    steps: int = 0
    env_reward: float = 0.0
    decisions: list[int] = field(default_factory=list)  # indices into the Rollouts' per-decision arrays
    frames: list[np.ndarray] = field(default_factory=list, repr=False)  # frame_camera at chunk boundaries
    infra_failure: bool = False  # its env worker crashed or hung: the episode says nothing about the policy
    policy_version: int = 0  # learner updates the collecting weights had seen (vla/rl/staleness.py)


@dataclass
class Rollouts:
    """Per-decision tensors (N decisions, leading dim) plus the trajectories they belong to."""

    observations: dict  # observations_to_batch layout: images uint8 [N, h, w, 3], state [N, D], task list
    chains: torch.Tensor  # [N, K + 1, H, A]
    step_masks: torch.Tensor  # [N, K] bool
    log_probs: torch.Tensor  # [N] at rollout time
    row_log_probs: torch.Tensor  # [N, n_action_steps] the same per executed action row (sums to log_probs)
    values: torch.Tensor  # [N] (zeros without a value head)
    rewards: torch.Tensor  # [N] binary: 1 for the decision whose chunk reached success
    env_rewards: torch.Tensor  # [N] the env's reward summed over the chunk
    dones: torch.Tensor  # [N] bool: the episode ended after this decision (success or time limit)
    entropy: torch.Tensor  # [N]
    std_mean: torch.Tensor  # [N]
    traj_ids: torch.Tensor  # [N] long
    trajectories: list[Trajectory]
    # The policy's choices before its actions, [N, ...] per key (latent reasoning's latents, lengths and
    # length log-probs: vla/policy/state_flow/reasoning.py), or None for a policy that makes none.
    reasoning: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.chains.shape[0]

    @property
    def env_steps(self) -> int:
        return sum(t.steps for t in self.trajectories)

    def trajectory_success(self) -> torch.Tensor:
        return torch.tensor([float(t.success) for t in self.trajectories])

    def trajectory_groups(self) -> torch.Tensor:
        return torch.tensor([t.group for t in self.trajectories], dtype=torch.long)

    def old_log_probs(self, idx: torch.Tensor, per_row: bool = False) -> torch.Tensor:
        """Rollout-time log-probs of decisions idx: [M], or [M, n_action_steps] per executed row."""
        return (self.row_log_probs if per_row else self.log_probs)[idx]

    def observation_batch(self, idx: torch.Tensor) -> dict:
        """The policy batch of the given decisions."""
        idx_list = idx.tolist()
        out = {}
        for key, value in self.observations.items():
            out[key] = [value[i] for i in idx_list] if key == "task" else value.index_select(0, idx)
        return out


class RolloutEngine:
    """Collects grouped rollouts of a policy in a vector env (see the module docstring)."""

    def __init__(self, policy, vec_env, sampling: SamplingSpec, noise_head: NoiseHead | None = None,
                 value_head=None, n_action_steps: int | None = None, frame_camera: str | None = None):
        self.policy, self.vec_env, self.sampling = policy, vec_env, sampling
        self.noise_head, self.value_head = noise_head, value_head
        self.n_exec = n_action_steps or policy.config.n_action_steps
        self.cameras = list(policy.config.cameras)
        self.frame_camera = frame_camera  # None: keep no frames (every method but SRPO)

    def collect(self, group_seeds: list[int], group_size: int, generator: torch.Generator,
                progress=None, policy_version: int = 0) -> Rollouts:
        """len(group_seeds) groups of group_size rollouts; group g resets from group_seeds[g]. Each
        trajectory carries policy_version: the learner updates the policy had seen."""
        return self.collect_plan(rollout_plan(group_seeds, group_size), generator, progress, policy_version)

    def collect_plan(self, plan: list[tuple[int, int]], generator: torch.Generator, progress=None,
                     policy_version: int = 0) -> Rollouts:
        """Rollouts of the (group, reset seed) pairs of ``plan``, in that order (see decision_rounds)."""
        rounds = self.decision_rounds(plan, generator, progress, policy_version)
        while True:
            try:
                next(rounds)
            except StopIteration as done:
                return done.value

    def decision_rounds(self, plan: list[tuple[int, int]], generator: torch.Generator, progress=None,
                        policy_version: int = 0):
        """The decision loop as a generator: it yields after every decision round (one batched policy
        call and one step_chunk of the vector env) and returns the Rollouts of ``plan`` when done. The
        driver runs it to the end in one go (collect); a Ray rollout worker advances it one round per
        call, so that the driver's per-call watchdog covers a rollout that runs on a worker."""
        if not plan:
            raise ValueError("need at least one rollout in the plan")
        return (yield from self._decision_rounds(plan, generator, progress, policy_version))

    @torch.no_grad()  # on a generator, torch enters no_grad around each step only, not between them
    def _decision_rounds(self, plan, generator, progress, policy_version):
        from vla.rl.heads import value_inputs

        policy, n_envs = self.policy, self.vec_env.num_envs
        trajectories: list[Trajectory] = []
        store: dict[str, list] = {k: [] for k in ("obs", "chain", "mask", "logp", "row_logp", "value", "reward",
                                                  "env_reward", "done", "entropy", "std", "traj", "reasoning")}
        for wave_start in range(0, len(plan), n_envs):
            wave = plan[wave_start: wave_start + n_envs]
            n = len(wave)
            seeds = [s for _, s in wave]
            obs = self.vec_env.reset(seeds + [seeds[-1]] * (n_envs - n))
            trajs = [Trajectory(len(trajectories) + i, g, s, obs[i]["task"], policy_version=policy_version)
                     for i, (g, s) in enumerate(wave)]
            trajectories.extend(trajs)
            for i in range(n):
                self._keep_frame(trajs[i], obs[i])
            active = [True] * n + [False] * (n_envs - n)
            while any(active):
                idx = [k for k in range(n_envs) if active[k]]
                batch = observations_to_batch([obs[k] for k in idx], self.cameras)
                sample = sample_chain(policy, batch, self.sampling.mode, self.sampling.sde_mode,
                                      self.sampling.noise_level, self.noise_head, generator, self.n_exec,
                                      mixed_steps=self.sampling.mixed_steps)
                if self.value_head is not None:
                    values = self.value_head(*value_inputs(policy, batch, sample.pooled)).float().cpu()
                else:
                    values = torch.zeros(len(idx))
                chunk = policy.normalizer.unnormalize(ACTION_KEY, sample.actions)[:, : self.n_exec]
                actions = np.zeros((n_envs, self.n_exec, chunk.shape[-1]), dtype=np.float32)
                actions[idx] = chunk.float().cpu().numpy()
                outs = self.vec_env.step_chunk(actions, record=None, active=active)
                yield
                for j, k in enumerate(idx):
                    o, reward, terminated, truncated, info = outs[k]
                    traj = trajs[k]
                    if info.get("infra_failure"):  # dropped below, never scored as a task failure
                        traj.infra_failure = True
                        active[k] = False
                        if progress is not None:
                            progress()
                        continue
                    success = bool(info["is_success"])
                    done = bool(terminated or truncated)
                    traj.decisions.append(len(store["traj"]))
                    traj.steps += int(info["steps"])
                    traj.env_reward += float(reward)
                    traj.success |= success
                    self._keep_frame(traj, o)
                    store["obs"].append((batch, j))
                    store["chain"].append(sample.chain[j].cpu())
                    store["mask"].append(sample.step_mask[j].cpu())
                    store["logp"].append(sample.log_prob[j].cpu())
                    store["row_logp"].append(sample.row_log_prob[j].cpu())
                    store["value"].append(values[j])
                    store["reward"].append(float(success))
                    store["env_reward"].append(float(reward))
                    store["done"].append(done)
                    store["entropy"].append(sample.entropy[j].cpu())
                    store["std"].append(sample.std_mean[j].cpu())
                    store["traj"].append(traj.index)
                    store["reasoning"].append(None if sample.reasoning is None else
                                              {k: v[j].cpu() for k, v in sample.reasoning.items()})
                    obs[k] = o
                    if done:
                        active[k] = False
                        if progress is not None:
                            progress()
        trajectories = _drop_lost_episodes(trajectories, store)
        return Rollouts(
            observations=_stack_observations(store["obs"]),
            chains=torch.stack(store["chain"]),
            step_masks=torch.stack(store["mask"]),
            log_probs=torch.stack(store["logp"]).float(),
            row_log_probs=torch.stack(store["row_logp"]).float(),
            values=torch.stack(store["value"]).float(),
            rewards=torch.tensor(store["reward"], dtype=torch.float32),
            env_rewards=torch.tensor(store["env_reward"], dtype=torch.float32),
            dones=torch.tensor(store["done"], dtype=torch.bool),
            entropy=torch.stack(store["entropy"]).float(),
            std_mean=torch.stack(store["std"]).float(),
            traj_ids=torch.tensor(store["traj"], dtype=torch.long),
            trajectories=trajectories,
            reasoning=_stack_reasoning(store["reasoning"]),
        )

    def _keep_frame(self, traj: Trajectory, obs: dict) -> None:
        if self.frame_camera is None:
            return
        images = obs["images"]
        if self.frame_camera not in images:
            raise KeyError(f"frame_camera {self.frame_camera!r}: the env renders {sorted(images)}; "
                           "create it with that camera (vla/rl/srpo/setup.py adds it for SRPO)")
        traj.frames.append(np.array(images[self.frame_camera], copy=True))


def rollout_plan(group_seeds: list[int], group_size: int) -> list[tuple[int, int]]:
    """(group, reset seed) of every rollout, group by group: the order of the Rollouts' trajectories."""
    if group_size < 1 or not group_seeds:
        raise ValueError(f"need at least one group of at least one rollout, got {len(group_seeds)} x {group_size}")
    return [(g, s) for g, s in enumerate(group_seeds) for _ in range(group_size)]


def merge_rollouts(parts: list[tuple[list[int], Rollouts]]) -> Rollouts:
    """One Rollouts from several collected apart (Ray rollout workers): ``parts`` holds, per part, the
    plan position of each of its trajectories and its Rollouts. Trajectories come out in plan order,
    renumbered, and each one's decisions contiguous, in their own order. Every part's observations
    hold the same keys (the same policy's cameras)."""
    order = sorted((pos, n, t) for n, (positions, part) in enumerate(parts)
                   for pos, t in zip(positions, part.trajectories))
    if not order:
        raise ValueError("no trajectory to merge: every rollout was lost")
    rows: list[tuple[int, int]] = []  # (part, decision) in the merged order
    trajectories = []
    for new_index, (_, n, t) in enumerate(order):
        start = len(rows)
        rows.extend((n, d) for d in t.decisions)
        t.index, t.decisions = new_index, list(range(start, len(rows)))
        trajectories.append(t)

    def gather(get):  # [N, ...] in merged order from each part's tensor
        pieces = [get(part) for _, part in parts]
        return torch.stack([pieces[n][d] for n, d in rows]) if rows else torch.empty(0)

    observations = {key: gather(lambda p, k=key: p.observations[k])
                    for key in parts[order[0][1]][1].observations if key != "task"}
    observations["task"] = [parts[n][1].observations["task"][d] for n, d in rows]
    traj_ids = torch.tensor([t.index for t in trajectories for _ in t.decisions], dtype=torch.long)
    reasoning = None
    if parts[order[0][1]][1].reasoning is not None:
        reasoning = {key: gather(lambda p, k=key: p.reasoning[k]) for key in parts[order[0][1]][1].reasoning}
    return Rollouts(observations=observations, chains=gather(lambda p: p.chains),
                    step_masks=gather(lambda p: p.step_masks), log_probs=gather(lambda p: p.log_probs),
                    row_log_probs=gather(lambda p: p.row_log_probs), values=gather(lambda p: p.values),
                    rewards=gather(lambda p: p.rewards), env_rewards=gather(lambda p: p.env_rewards),
                    dones=gather(lambda p: p.dones), entropy=gather(lambda p: p.entropy),
                    std_mean=gather(lambda p: p.std_mean), traj_ids=traj_ids, trajectories=trajectories,
                    reasoning=reasoning)


def _drop_lost_episodes(trajectories: list[Trajectory], store: dict[str, list]) -> list[Trajectory]:
    """Remove trajectories whose worker was lost (and their decisions); renumber the rest in place."""
    lost = {t.index for t in trajectories if t.infra_failure}
    if not lost:
        return trajectories
    keep = [i for i, ti in enumerate(store["traj"]) if ti not in lost]
    for key in store:
        store[key] = [store[key][i] for i in keep]
    kept = [t for t in trajectories if not t.infra_failure]
    new_index = {t.index: n for n, t in enumerate(kept)}
    store["traj"] = [new_index[ti] for ti in store["traj"]]
    for t in kept:
        t.index, t.decisions = new_index[t.index], []
    for pos, ti in enumerate(store["traj"]):
        kept[ti].decisions.append(pos)
    return kept


def _stack_reasoning(rows: list[dict | None]) -> dict[str, torch.Tensor] | None:
    """Per-decision reasoning records -> one dict of [N, ...] tensors (None when the policy made none)."""
    if not rows or rows[0] is None:
        return None
    return {key: torch.stack([r[key] for r in rows]) for key in rows[0]}


def _stack_observations(rows: list[tuple[dict, int]]) -> dict:
    """Per-decision (batch, row) references -> one batch dict in decision order (every batch comes from
    observations_to_batch with the policy's cameras, so all hold the same keys)."""
    out: dict = {}
    for key in [k for k in rows[0][0] if k != "task"] if rows else []:
        out[key] = torch.stack([batch[key][j] for batch, j in rows])
    out["task"] = [batch["task"][j] for batch, j in rows]
    return out

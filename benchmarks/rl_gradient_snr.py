"""How much signal is in one GRPO gradient on Lift: agreement of independent gradient estimates.

Collects G groups of rollouts of a policy (RolloutEngine, Lift, a given sampler), then for
many random splits of the groups into two halves computes the GRPO policy gradient of each
half at the rollout weights (one minibatch holding the whole half, no clipping) and their
cosine. For two independent estimates from n trajectories each,

    E[cos] ~ rho n / (1 + rho n),   rho = |true gradient|^2 / (per-trajectory gradient variance),

so rho = cos / (n (1 - cos)) and 1 / rho trajectories make a gradient whose signal equals its
noise. When the cosines do not separate from 0, the upper end of mean + 2 standard errors
gives a lower bound on that number (the splits share rollouts, so the bound is loose). The same
rollouts are scored with the shaped and the binary reward, and (--surrogates) with the chain's
Flow-SDE log-prob and with FPO's flow-matching surrogate (vla/rl/flow_surrogate.py; "fpo-uncentred"
leaves out GRPO's per-group re-centring of FPO advantages over decisions).

Agreement alone does not say the agreeing part is about reward: a flow-matching loss gradient has a
nonzero mean over the policy's own actions, so any net advantage weight adds the same reward-blind
direction to both halves. Each row therefore also reports the mean cosine of a half's gradient (of
the loss, which the optimizer descends) with that half's "blind" direction, the gradient of the
mean surrogate log-prob over all its decisions; a positive cosine means the update raises the
flow-matching loss of whatever the policy did, as advantage -1 everywhere would. It also reports
the agreement of the two halves once each half's blind direction is projected out of its gradient.

    python benchmarks/rl_gradient_snr.py --policy outputs/quickstart/train/policy --samplers sde:0.5 sde:1.0:2
    python benchmarks/rl_gradient_snr.py --policy outputs/quickstart/train/policy --samplers sde:0.5 ode \
        --surrogates logprob fpo
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402  (benchmarks/common.py)
from rl_sampling_modes import sampler  # noqa: E402

from vla.config import RLConfig  # noqa: E402
from vla.policy.registry import load_policy  # noqa: E402
import vla.rl.grpo as grpo  # noqa: E402
from vla.rl.flow_surrogate import build_flow_surrogate  # noqa: E402
from vla.rl.grpo import grpo_update  # noqa: E402
from vla.rl.rollout import RolloutEngine, Rollouts  # noqa: E402
from vla.rl.update import UpdateContext  # noqa: E402
from vla.sim import VectorEnv  # noqa: E402


def flat_grads(params) -> torch.Tensor:
    """The parameters' .grad as one vector (zeros where a parameter got none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])


class GradientRecorder:
    """Stands in for the optimizer: keeps the gradient of the (single) step instead of stepping."""

    def __init__(self, params):
        self.params, self.grad = params, None

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.grad = flat_grads(self.params)


def subset(rollouts: Rollouts, groups: set[int]) -> Rollouts:
    """The rollouts of the given groups, decisions and trajectories renumbered."""
    keep_t = [t for t in rollouts.trajectories if t.group in groups]
    idx = torch.tensor([d for t in keep_t for d in t.decisions])
    new_traj = {t.index: i for i, t in enumerate(keep_t)}
    trajectories, pos = [], 0
    for t in keep_t:
        n = len(t.decisions)
        trajectories.append(type(t)(new_traj[t.index], t.group, t.seed, t.task, t.success, t.steps, t.env_reward,
                                    list(range(pos, pos + n))))
        pos += n
    pick = lambda x: x.index_select(0, idx)
    return Rollouts(observations=rollouts.observation_batch(idx), chains=pick(rollouts.chains),
                    step_masks=pick(rollouts.step_masks), log_probs=pick(rollouts.log_probs),
                    row_log_probs=pick(rollouts.row_log_probs), values=pick(rollouts.values),
                    rewards=pick(rollouts.rewards), env_rewards=pick(rollouts.env_rewards), dones=pick(rollouts.dones),
                    entropy=pick(rollouts.entropy), std_mean=pick(rollouts.std_mean),
                    traj_ids=torch.tensor([new_traj[rollouts.trajectories[int(i)].index]
                                           for i in rollouts.traj_ids[idx]]),
                    trajectories=trajectories)


def fpo_surrogate(policy, rollouts: Rollouts, cfg: RLConfig):
    return build_flow_surrogate(policy, rollouts, cfg.fpo_samples, rollouts.row_log_probs.shape[1],
                                torch.Generator().manual_seed(1))


def half_gradient(policy, spec, rollouts: Rollouts, cfg: RLConfig, centre: bool = True) -> torch.Tensor | None:
    params = [p for p in policy.parameters() if p.requires_grad]
    recorder = GradientRecorder(params)
    cfg.minibatch_size = len(rollouts)
    ctx = UpdateContext(policy, recorder, params, spec, 0, torch.Generator().manual_seed(0),
                        logprob_level=cfg.logprob_level)
    if cfg.surrogate == "fpo":
        ctx.flow_surrogate = fpo_surrogate(policy, rollouts, cfg)
    centre_per_group = grpo.centre_per_group
    if not centre:
        grpo.centre_per_group = lambda values, groups: values
    try:
        grpo_update(ctx, rollouts, cfg)
    finally:
        grpo.centre_per_group = centre_per_group
    return recorder.grad


def blind_direction(policy, rollouts: Rollouts, cfg: RLConfig) -> torch.Tensor:
    """Gradient of the mean FPO surrogate over all decisions: the direction any net advantage adds."""
    params = [p for p in policy.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    fpo, n = fpo_surrogate(policy, rollouts, cfg), len(rollouts)
    for idx in torch.arange(n).split(256):
        encoded = policy.encode_observation(rollouts.observation_batch(idx))
        (fpo.log_prob(policy, encoded, rollouts.chains[idx, -1], idx, per_row=False).sum() / n).backward()
    return flat_grads(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--samplers", nargs="+", default=["sde:0.5", "sde:1.0:2"])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--splits", type=int, default=12)
    parser.add_argument("--surrogates", nargs="+", default=["logprob"], choices=["logprob", "fpo", "fpo-uncentred"])
    parser.add_argument("--first-seed", type=int, default=7_000_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env_kwargs = dict(task="lift", cameras=("agentview",), image_size=64, max_episode_steps=200, reward_shaping=True)
    rows = []
    with VectorEnv(1, env_kwargs) as env:
        for name in args.samplers:
            policy = load_policy(args.policy).eval()
            spec, head = sampler(policy, name)
            seeds = [args.first_seed + g for g in range(args.groups)]
            rollouts = RolloutEngine(policy, env, spec, noise_head=head).collect(
                seeds, args.group_size, torch.Generator().manual_seed(0))
            success = float(rollouts.trajectory_success().mean())
            splits = list(itertools.combinations(range(args.groups), args.groups // 2))
            random.Random(0).shuffle(splits)
            blind = {}  # half (groups) -> its blind direction
            for surrogate, reward in itertools.product(args.surrogates, ("shaped", "success")):
                if surrogate == "logprob" and spec.mode == "ode":
                    continue  # the ODE chain has no log-prob
                cfg = RLConfig(algo="grpo", reward=reward, advantage_std="batch", logprob_level="action", epochs=1,
                               grad_clip=0.0, target_kl=0.0, dynamic_sampling=True,
                               surrogate="fpo" if surrogate.startswith("fpo") else surrogate)
                cfg.env.max_episode_steps = 200
                cosines, to_blind, residual = [], [], []
                for half in splits[: args.splits]:
                    other = tuple(sorted(set(range(args.groups)) - set(half)))
                    grads = [half_gradient(policy, spec, subset(rollouts, set(h)), cfg, surrogate != "fpo-uncentred")
                             for h in (half, other)]
                    if any(g is None for g in grads):
                        continue
                    cosines.append(float(torch.nn.functional.cosine_similarity(*grads, dim=0)))
                    rests = []
                    for h, g in zip((half, other), grads):
                        if h not in blind:
                            blind[h] = blind_direction(policy, subset(rollouts, set(h)), cfg)
                        to_blind.append(float(torch.nn.functional.cosine_similarity(g, blind[h], dim=0)))
                        unit = blind[h] / blind[h].norm()
                        rests.append(g - (g @ unit) * unit)
                    residual.append(float(torch.nn.functional.cosine_similarity(*rests, dim=0)))
                n = args.groups // 2 * args.group_size
                c = torch.tensor(cosines, dtype=torch.float64)
                cos = float(c.mean()) if cosines else float("nan")
                upper = cos + 2 * float(c.std()) / len(cosines) ** 0.5 if len(cosines) > 1 else float("nan")
                at_least = n * (1 - upper) / upper if 0 < upper < 1 else None
                rows.append({"sampler": name, "surrogate": surrogate, "reward": reward, "success": success, "cosines": cosines,
                             "mean_cos": cos, "cos_upper_2se": upper, "trajectories_per_half": n,
                             "trajectories_for_snr_1": n * (1 - cos) / cos if 0 < cos < 1 else None,
                             "trajectories_for_snr_1_at_least": at_least,
                             "cos_to_blind_direction": sum(to_blind) / max(len(to_blind), 1),
                             "mean_cos_blind_projected_out": sum(residual) / max(len(residual), 1)})
                needed = rows[-1]["trajectories_for_snr_1"]
                needed = f"{needed:.0f}" if needed else f"at least {at_least:.0f}" if at_least else "?"
                print(f"{name:10s} {surrogate:7s} {reward:7s} rollout success {100 * success:.0f}%  cos {cos:+.3f} "
                      f"(+2 s.e. {upper:+.3f}) over {len(cosines)} splits of n={n}  -> signal = noise needs "
                      f"{needed} trajectories; cos to the blind direction {rows[-1]['cos_to_blind_direction']:+.3f}, "
                      f"halves' cos with it projected out {rows[-1]['mean_cos_blind_projected_out']:+.3f}",
                      flush=True)
    if args.json:
        write_json(args.json, args, rows=rows)


if __name__ == "__main__":
    main()

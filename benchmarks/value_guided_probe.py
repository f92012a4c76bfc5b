"""Probe: can a critic learned from rollouts make a frozen state policy reliable by choosing its noise?

Self-imitation on PickPlaceCan stopped because the outcome at most states is decided by the initial
noise (rl_state_solvability.py: 69% of states mixed, 1-2 wins in 6). A critic Q(s, chunk) that tells
the winning chunks apart would cash that in without touching the base weights: at every decision
draw K initial noises, let the frozen policy turn each into a chunk, execute the chunk the critic
scores highest (value-guided policy steering; DSRL-NA's action-space critic used by sampling instead
of a learned noise actor). The critic is fitted to Monte-Carlo outcomes (gamma per decision on
success, 0 on failure), so there is no bootstrapped target to fit through.

    # rollouts of the base policy (K=1) from training states, saved for the critic
    python benchmarks/value_guided_probe.py rollouts --policy P --task pick_place_can --episodes 64 \
        --first-seed 5000000 --out outputs/vgps/r0_a.npz
    python benchmarks/value_guided_probe.py fit --data outputs/vgps/r0_*.npz --out outputs/vgps/critic0
    # the fixed evaluation (seeds 100000..100049, per-episode noise as `vla eval` draws it: with K = 1
    # these are the base policy's episodes)
    python benchmarks/value_guided_probe.py rollouts --policy P --task pick_place_can --episodes 50 \
        --first-seed 100000 --k 8 --critic outputs/vgps/critic0 --out outputs/vgps/eval_k8.npz

Repeating rollouts (with the critic) -> fit on all data so far -> evaluate is approximate policy
iteration. A probe for the noise-steering issue, not the product path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vla.eval.stats import wilson_interval  # noqa: E402
from vla.policy.observation import observations_to_batch  # noqa: E402
from vla.policy.registry import load_policy  # noqa: E402
from vla.sim import make_env  # noqa: E402


class Critic(nn.Module):
    """An ensemble of MLPs on standardised [observation features, executed chunk] -> success logit."""

    def __init__(self, in_dim: int, members: int, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.nets = nn.ModuleList(nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                                nn.ReLU(), nn.Linear(hidden, 1)) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [members, B]."""
        x = (x - self.mean) / self.std
        return torch.stack([net(x)[:, 0] for net in self.nets])


def save_critic(critic: Critic, directory: Path, meta: dict) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(critic.state_dict(), str(directory / "critic.safetensors.tmp"))
    (directory / "critic.safetensors.tmp").rename(directory / "critic.safetensors")
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_critic(directory: Path) -> Critic:
    from safetensors.torch import load_file

    meta = json.loads((directory / "meta.json").read_text())
    critic = Critic(meta["in_dim"], meta["members"], meta["hidden"])
    critic.load_state_dict(load_file(str(directory / "critic.safetensors")))
    return critic.eval().requires_grad_(False)


def rollouts(a) -> None:
    torch.set_num_threads(1)
    policy = load_policy(a.policy).eval().requires_grad_(False)
    c = policy.config
    critic = load_critic(Path(a.critic)) if a.critic else None
    env = make_env(task=a.task, cameras=(), max_episode_steps=a.max_episode_steps, reward_shaping=True)
    features, chunks, episode_of, decision_of, successes, steps_to_end = [], [], [], [], [], []
    rewards = []  # robosuite's staged dense reward, averaged over the executed chunk
    start = time.time()
    for e in range(a.episodes):
        seed = a.first_seed + e
        obs, _ = env.reset(seed=seed)
        generator = torch.Generator().manual_seed(seed)
        done, success, d, steps = False, False, 0, 0
        while not done:
            noise = torch.randn((a.k, c.chunk_size, c.model_action_dim), generator=generator)
            batch = observations_to_batch([obs] * a.k, [])
            feat = policy.observation_vector(batch)[0]
            candidates = policy.predict_action_chunk(batch, noise=noise)[:, : c.n_action_steps]
            pick = 0
            if critic is not None and a.k > 1:
                x = torch.cat([feat.expand(a.k, -1), candidates.flatten(1)], dim=1)
                scores = torch.sigmoid(critic(x))
                score = scores.mean(0) - a.pessimism * scores.std(0)
                if a.explore > 0 and np.random.default_rng(seed * 1000 + d).random() < a.explore:
                    pick = 0
                else:
                    pick = int(score.argmax())
            chunk = candidates[pick].numpy()
            features.append(feat.numpy())
            chunks.append(chunk.reshape(-1))
            episode_of.append(e)
            decision_of.append(d)
            obs, _, terminated, truncated, info = env.step_chunk(chunk)
            rewards.append(float(np.mean(info["rewards"])))
            steps += int(info.get("steps", len(chunk)))
            success |= bool(info["is_success"])
            done = terminated or truncated or success
            d += 1
        successes.append(success)
        steps_to_end.append(d)
        if not a.quiet:
            print(f"episode {e} seed {seed}: {'success' if success else 'fail'} in {d} decisions "
                  f"({steps} steps); {sum(successes)}/{len(successes)} so far, {time.time() - start:.0f} s", flush=True)
    k, n = sum(successes), len(successes)
    lo, hi = wilson_interval(k, n)
    summary = {"pc_success": 100.0 * k / n, "ci95": [100 * lo, 100 * hi], "n": n, "k": a.k,
               "critic": a.critic, "first_seed": a.first_seed, "wall_s": time.time() - start,
               "env_steps_decisions": int(len(chunks)), "per_episode": [bool(s) for s in successes]}
    print(json.dumps({key: v for key, v in summary.items() if key != "per_episode"}), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, features=np.asarray(features, np.float32), chunks=np.asarray(chunks, np.float32),
             episode=np.asarray(episode_of), decision=np.asarray(decision_of), reward=np.asarray(rewards, np.float32),
             success=np.asarray(successes), decisions=np.asarray(steps_to_end))
    tmp.rename(out)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))


def targets(data: dict, gamma: float, kind: str = "success") -> np.ndarray:
    """Monte-Carlo value per decision in [0, 1]. success: gamma ** (decisions left) if the episode
    succeeded, else 0. shaped: the discounted sum of the staged dense reward from this decision on
    (averaged over the chunk's steps, so a decision earns at most 1), times (1 - gamma), with a
    success worth 1 for every decision after it."""
    ep, d = data["episode"], data["decision"]
    ok, length = data["success"][ep], data["decisions"][ep]
    if kind == "success":
        return np.where(ok, gamma ** (length - 1 - d), 0.0).astype(np.float32)
    per_decision = np.clip(data["reward"], 0.0, 1.0)
    out = np.zeros(len(d), np.float32)
    for e in np.unique(ep):
        idx = np.flatnonzero(ep == e)
        g = 1.0 if ok[idx[0]] else 0.0  # a success ends the episode: its value after is 1 per decision
        for i in idx[::-1]:
            g = (1 - gamma) * per_decision[i] + gamma * g
            out[i] = g
    return out


def fit(a) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    parts = [dict(np.load(f)) for f in a.data]
    x = np.concatenate([np.concatenate([p["features"], p["chunks"]], 1) for p in parts])
    y = np.concatenate([targets(p, a.gamma, a.target) for p in parts])
    # hold out whole episodes (of the first file) to see whether the critic generalises at all
    group = np.concatenate([p["episode"] + 100_000 * i for i, p in enumerate(parts)])
    rng = np.random.default_rng(a.seed)
    episodes = np.unique(group)
    held = set(rng.choice(episodes, size=max(1, len(episodes) // 8), replace=False).tolist())
    val = np.array([g in held for g in group])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    critic = Critic(x.shape[1], a.members, a.hidden)
    critic.mean.copy_(xt[~val].mean(0))
    critic.std.copy_(xt[~val].std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(critic.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    train_idx = np.flatnonzero(~val)
    for step in range(a.steps):
        # each member sees its own bootstrap minibatch
        idx = torch.from_numpy(rng.choice(train_idx, size=(a.members, a.batch_size)))
        logits = torch.stack([net((xt[i] - critic.mean) / critic.std)[:, 0] for net, i in zip(critic.nets, idx)])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == a.steps - 1:
            with torch.no_grad():
                pv = torch.sigmoid(critic(xt[val])).mean(0)
                vloss = nn.functional.binary_cross_entropy(pv.clamp(1e-6, 1 - 1e-6), yt[val]).item()
            print(f"step {step}: train bce {loss.item():.4f}, held-out bce {vloss:.4f}", flush=True)
    meta = {"in_dim": x.shape[1], "members": a.members, "hidden": a.hidden, "gamma": a.gamma,
            "decisions": int(len(y)), "episodes": int(len(episodes)), "data": a.data}
    save_critic(critic, Path(a.out), meta)
    print(json.dumps(meta), flush=True)


def anatomy(a) -> None:
    """How failed PickPlaceCan episodes fail, from the rollouts' recorded observations: the gripper never
    closed, closed without lifting the can (a missed grasp), lifted and dropped it, or carried it without
    placing it. Also the closest the can came to the gripper in each failure."""
    from vla.policy.state_flow.policy import ENV_STATE_KEY, STATE_KEY

    policy = load_policy(a.policy)
    n_state = policy.config.state_dim
    counts = {"never_closed": 0, "closed_not_lifted": 0, "lifted_dropped": 0, "carried_not_placed": 0}
    closest, first_close, successes, episodes, reopened = [], [], 0, 0, 0
    for path in a.data:
        d = dict(np.load(path))
        f = torch.from_numpy(d["features"])
        state = policy.normalizer.unnormalize(STATE_KEY, f[:, :n_state]).numpy()
        objects = policy.normalizer.unnormalize(ENV_STATE_KEY, f[:, n_state:]).numpy()
        for e in np.unique(d["episode"]):
            episodes += 1
            if d["success"][e]:
                successes += 1
                continue
            i = d["episode"] == e
            # robosuite PickPlaceCan object state: can position, quaternion, can-to-gripper position, quaternion;
            # robot state ends with the two finger joints
            height = objects[i, 2] - objects[i, 2][0]
            width = state[i, -2] - state[i, -1]
            closest.append(float(np.linalg.norm(objects[i, 7:10], axis=1).min()))
            if height.max() > 0.05:
                counts["carried_not_placed" if height[-1] > 0.05 else "lifted_dropped"] += 1
            elif (width < 0.03).any():
                counts["closed_not_lifted"] += 1
                first = int(np.flatnonzero(width < 0.03)[0])
                first_close.append(first)
                reopened += bool((width[first:] > 0.06).any())
            else:
                counts["never_closed"] += 1
    report = {"episodes": episodes, "successes": successes, "failures": counts,
              "closest_can_to_gripper_m_in_failures": {q: float(np.percentile(closest, q)) for q in (10, 50, 90)},
              "missed_grasps_reopened_later": reopened,
              "decision_of_missed_grasp": {q: float(np.percentile(first_close, q)) for q in (10, 50, 90)}}
    print(json.dumps(report, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps({"data": a.data, **report}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rollouts")
    r.add_argument("--policy", required=True)
    r.add_argument("--task", default="pick_place_can")
    r.add_argument("--max-episode-steps", type=int, default=400)
    r.add_argument("--episodes", type=int, default=50)
    r.add_argument("--first-seed", type=int, default=100_000)
    r.add_argument("--k", type=int, default=1, help="candidate noises per decision")
    r.add_argument("--critic", default=None)
    r.add_argument("--pessimism", type=float, default=0.0, help="score = mean - pessimism * ensemble std")
    r.add_argument("--explore", type=float, default=0.0, help="probability of executing candidate 0 anyway")
    r.add_argument("--out", required=True)
    r.add_argument("--quiet", action="store_true")
    f = sub.add_parser("fit")
    f.add_argument("--data", nargs="+", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--gamma", type=float, default=0.97)
    f.add_argument("--target", choices=["success", "shaped"], default="success")
    f.add_argument("--members", type=int, default=5)
    f.add_argument("--hidden", type=int, default=256)
    f.add_argument("--steps", type=int, default=3000)
    f.add_argument("--batch-size", type=int, default=256)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--weight-decay", type=float, default=1e-4)
    f.add_argument("--seed", type=int, default=0)
    n = sub.add_parser("anatomy", help="how the failed PickPlaceCan episodes in rollout files fail")
    n.add_argument("--policy", required=True, help="the policy whose normaliser reads the recorded features")
    n.add_argument("--data", nargs="+", required=True)
    n.add_argument("--json", default=None)
    a = p.parse_args()
    {"rollouts": rollouts, "fit": fit, "anatomy": anatomy}[a.cmd](a)


if __name__ == "__main__":
    main()

"""LAPO on the state policy and the pixel VLA (issue 22): what thinking costs, what the warm-up gives, what RL
adds.

Three measurements, each a sub-command:

    # milliseconds per chunk (batch 1, the deployed ODE sampler) for chains of 2, 4, 6, 8 latents,
    # against the same policy without latent reasoning; seconds on a CPU (--policy vla: the tiny VLA)
    python benchmarks/lapo_state.py thinking --device cpu --rounds 15 --calls 20 [--policy vla]

    # warm-up alone: latent-reasoning SFT against plain SFT from the same demos, 3 seeds, fixed evaluation
    python benchmarks/lapo_state.py warmup --task stack --demos 10 --seeds 0 1 2 --steps 3000

    # RL: LAPO on the thinking policy against PPO on the plain one, the same rollouts per iteration,
    # success over env steps (history.json), the mean chosen length per iteration
    python benchmarks/lapo_state.py rl --task stack --demos 10 --seeds 0 1 2 --iterations 30

    # the length each thinking policy (warm-up, then after LAPO) chooses at evaluation, in the easy
    # phase (reaching, gripper open) and the hard one (from the first grasp on: lift, carry, place)
    python benchmarks/lapo_state.py lengths --task stack --demos 10 --seeds 0 1 2 --episodes 20

    # the same three on the pixel VLA (tiny preset, one 64 px camera, the quickstart's SFT recipe; RL with
    # configs/rl/lift_ppo.yaml less its velocity anchor, which LAPO cannot use) on Lift
    python benchmarks/lapo_state.py warmup --policy vla --task lift --demos 10 --seeds 0 1 2
    python benchmarks/lapo_state.py rl --policy vla --task lift --demos 10 --seeds 0 1 2 --iterations 12

--arms plain|latent runs one arm (parallel processes split the work; collect once before starting them).
warmup and rl reuse what exists under --out (collect and train once), call the `vla` CLI for every
stage, and write benchmarks/results/lapo_state_<command>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, evaluated, machine, run_vla as run, write_json  # noqa: E402  (benchmarks/common.py)

from vla.policy.config import PolicyConfig  # noqa: E402
from vla.policy.state_flow import StateFlowPolicy  # noqa: E402

STEP_LIMITS = {"lift": 200, "pick_place_can": 400, "nut_assembly_square": 400, "stack": 300}
LENGTHS = (2, 4, 6, 8)
CAMERA = "agentview"  # the pixel VLA's one camera, 64 px (the quickstart's)
# The quickstart's SFT recipe (configs/quickstart.yaml) for the pixel VLA; the state policy's is below in _trained.
VLA_TRAIN = ["--policy.preset=tiny", "--batch_size=32", "--lr=3e-4", "--warmup_steps=100", "--image_shift=4"]
LIFT_PPO = Path(__file__).resolve().parents[1] / "configs" / "rl" / "lift_ppo.yaml"


# ------------------------------------------------------------------ thinking cost
def _policy(kind: str, latent_lengths: list[int] | None, device: str):
    """The default state policy (hidden 256, 3 blocks) on Lift's sizes, or the tiny-preset VLA (one 64 px
    camera); chunk 16, 10 Euler steps."""
    thinking = {"latent_reasoning": latent_lengths is not None, **({"latent_lengths": latent_lengths} if latent_lengths else {})}
    if kind == "state":
        config = PolicyConfig(type="state_flow", state_dim=8, action_dim=7, environment_state_dim=10, chunk_size=16,
                              n_action_steps=8, num_inference_steps=10, **thinking)
        policy = StateFlowPolicy(config)
    else:
        from vla.policy.flow_vla import FlowVLAPolicy

        policy = FlowVLAPolicy(PolicyConfig(preset="tiny", state_dim=8, action_dim=7, num_inference_steps=10,
                                            **thinking))
    stats = {k: {"mean": torch.zeros(d), "std": torch.ones(d), "min": -torch.ones(d), "max": torch.ones(d)}
             for k, d in (("observation.state", 8), ("observation.environment_state", 10), ("action", 7))}
    policy.normalizer.load_stats(stats)
    return policy.to(device).eval()


def _block_ms(fn, calls: int, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 1000.0 * (time.perf_counter() - start) / calls


@torch.no_grad()
def thinking(a) -> list[dict]:
    """ms per chunk at batch 1: the whole chunk (think + 10 Euler steps) and the thinking alone (the latent chain
    and its pooling, after the observation embedding), for a chain of L latents (a policy whose only candidate
    is L) and for the policy without latent reasoning. The configurations take turns in blocks of --calls, over
    --rounds rounds, and each reports the median block: a shared machine's load then falls on all alike."""
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    batch = {"observation.state": torch.randn(1, 8), "observation.environment_state": torch.randn(1, 10),
             "observation.images.agentview": torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8),
             "task": ["lift the red cube"]}
    configs = [(0, _policy(a.policy, None, a.device))] + [(n, _policy(a.policy, [n], a.device)) for n in LENGTHS]
    timings = {n: {"chunk": [], "think": [], "embed": []} for n, _ in configs}
    for round_ in range(a.rounds + 1):  # round 0 warms up
        for n, policy in configs:
            before = policy.embed if a.policy == "state" else policy.encode_prefix_and_state  # what thinking follows
            jobs = {"chunk": lambda: policy.predict_action_chunk(batch), "embed": lambda: before(batch)}
            if n:
                jobs["think"] = lambda: policy.think(batch)
            for name, fn in jobs.items():
                ms = _block_ms(fn, a.calls, a.device)
                if round_:
                    timings[n][name].append(ms)
    median = lambda xs: sorted(xs)[len(xs) // 2] if xs else 0.0
    rows = []
    for n, policy in configs:
        t = timings[n]
        think = max(median(t["think"]) - median(t["embed"]), 0.0) if n else 0.0
        rows.append({"latents": n, "chunk_ms": round(median(t["chunk"]), 3), "chunk_ms_min": round(min(t["chunk"]), 3),
                     "thinking_ms": round(think, 3), "parameters": sum(p.numel() for p in policy.parameters())})
        print(json.dumps(rows[-1]))
    print(f"\n{a.policy} policy, {machine()}, device {a.device}, {a.threads} torch thread(s), batch 1, median of {a.rounds} blocks "
          f"of {a.calls} calls\n")
    print("| latents | ms per chunk (median) | fastest block | of which thinking | parameters |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['latents'] or 'none'} | {r['chunk_ms']:.2f} | {r['chunk_ms_min']:.2f} | {r['thinking_ms']:.2f} | "
              f"{r['parameters']:,} |")
    return rows


# ------------------------------------------------------------------ warm-up and RL comparisons
def _cameras(a) -> tuple[str, ...]:
    return (CAMERA,) if a.policy == "vla" else ()


def _camera_args(a) -> list[str]:
    return [f"--env.cameras=[{','.join(_cameras(a))}]"] + (["--env.image_size=64"] if _cameras(a) else [])


def _root(a) -> Path:
    return Path(a.out) / (a.task + ("_vla" if a.policy == "vla" else "")) / f"demos{a.demos}"


def _demos(a) -> Path:
    root = _root(a)
    if not (root / "demos" / "meta" / "info.json").exists():
        run(["collect", f"--output_dir={root / 'demos'}", f"--env.task={a.task}", *_camera_args(a),
             f"--num_episodes={a.demos}", f"--env.max_episode_steps={STEP_LIMITS.get(a.task, 300)}",
             "--overwrite=true"])
    return root


def _trained(a, root: Path, variant: str, seed: int) -> Path:
    train = root / variant / f"seed{seed}" / "train"
    if not (train / "policy" / "config.json").exists():
        recipe = (VLA_TRAIN + [f"--steps={a.steps or 1500}"] if a.policy == "vla" else
                  ["--policy.type=state_flow", f"--steps={a.steps or 3000}", "--batch_size=64", "--ema_decay=0.999"])
        run(["train", f"--dataset={root / 'demos'}", f"--output_dir={train}", *recipe,
             f"--policy.latent_reasoning={'true' if variant == 'latent' else 'false'}", f"--seed={seed}",
             "--overwrite=true"])
    return train / "policy"


def _evaluated(a, policy: Path, out: Path) -> dict:
    return evaluated(policy, out, a.task, STEP_LIMITS.get(a.task, 300), a.eval_episodes, n_envs=2,
                     camera_args=tuple(_camera_args(a)))["aggregated"]


def warmup(a) -> list[dict]:
    root = _demos(a)
    rows = []
    for variant in a.arms:
        for seed in a.seeds:
            policy = _trained(a, root, variant, seed)
            info = _evaluated(a, policy, policy.parent.parent / "eval")
            rows.append({"variant": variant, "seed": seed, "pc_success": info["pc_success"],
                         "ci95": info["pc_success_ci95"], "policy": str(policy)})
            print(json.dumps(rows[-1]))
    return rows


def rl(a) -> list[dict]:
    root = _demos(a)
    rows = []
    if a.policy == "vla":  # the shipped Lift PPO config (4 x 4 rollouts, lr 3e-5) less the anchor
        recipe = [f"--config={LIFT_PPO}", "--anchor_coef=0", "--n_envs=1"]
    else:
        recipe = ["--n_groups=4", "--group_size=8", "--n_envs=2", "--lr=1e-4", "--epochs=4",
                  "--minibatch_size=256", "--logprob_level=action", "--target_kl=0.1"]
    for variant in a.arms:
        algo = {"plain": "ppo", "latent": "lapo"}[variant]
        for seed in a.seeds:
            policy = _trained(a, root, variant, seed)
            out = root / variant / f"seed{seed}" / algo
            if not (out / "rl_summary.json").exists():
                run(["rl", *recipe, f"--algo={algo}", f"--policy={policy}", f"--output_dir={out}",
                     f"--env.task={a.task}", *_camera_args(a),
                     f"--env.max_episode_steps={STEP_LIMITS.get(a.task, 300)}",
                     f"--iterations={a.iterations}", f"--seed={seed}", f"--eval.n_episodes={a.eval_episodes}",
                     "--overwrite=true"])
            history = json.loads((out / "history.json").read_text())["history"]
            summary = json.loads((out / "rl_summary.json").read_text())
            cpu = np.cumsum([h.get("cpu_s", np.nan) for h in history]) / 60.0
            rows.append({"variant": variant, "algo": algo, "seed": seed, "eval_pc_success": summary.get("eval_pc_success"),
                         "start_pc_success": _evaluated(a, policy, policy.parent.parent / "eval")["pc_success"],
                         # (env steps, training success, mean chosen length, training CPU-minutes) per iteration
                         "curve": [(h["env_steps"], h["success_rate"], h.get("length_mean"), None if np.isnan(c) else
                                    round(float(c), 3)) for h, c in zip(history, cpu)]})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}))
    return rows


def _phase_lengths(policy, task: str, episodes: int, seed: int, cameras: tuple[str, ...] = ()) -> dict:
    """Decisions of the deployed thinking policy on the fixed states seed + i: its chosen length per decision,
    split at the first decision whose chunk closes the gripper (the last action coordinate > 0)."""
    from vla.policy.observation import observations_to_batch
    from vla.sim import make_env

    env = make_env(task=task, cameras=cameras, image_size=64, max_episode_steps=STEP_LIMITS.get(task, 300))
    phases = {"reach": [], "manipulate": []}
    success = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            torch.manual_seed(seed + i)
            grasped, done, info = False, False, {}
            while not done:
                with torch.no_grad():
                    condition, features = policy.encode_observation(observations_to_batch([obs], list(cameras)))
                    chunk = policy.normalizer.unnormalize("action", policy.integrate(condition, features))
                chunk = chunk[0, : policy.config.n_action_steps].numpy()
                phases["manipulate" if grasped else "reach"].append(int(condition.reasoning.lengths[0]))
                grasped = grasped or bool((chunk[:, -1] > 0).any())
                obs, _, terminated, truncated, info = env.step_chunk(chunk)
                done = terminated or truncated or bool(info.get("is_success"))
            success.append(bool(info.get("is_success")))
    finally:
        env.close()
    return {"success": float(np.mean(success)),
            **{f"{k}_length_mean": (float(np.mean(v)) if v else None) for k, v in phases.items()},
            **{f"{k}_decisions": len(v) for k, v in phases.items()}}


def lengths(a) -> list[dict]:
    root = _root(a) / "latent"
    rows = []
    for seed in a.seeds:
        for stage, policy_dir in (("warm-up", root / f"seed{seed}" / "train" / "policy"),
                                  ("lapo", root / f"seed{seed}" / "lapo" / "policy")):
            if not (policy_dir / "config.json").exists():
                print(f"skipping {policy_dir}: not trained")
                continue
            from vla.policy.registry import load_policy

            row = {"seed": seed, "stage": stage,
                   **_phase_lengths(load_policy(policy_dir), a.task, a.episodes, 100000, _cameras(a))}
            rows.append(row)
            print(json.dumps(row))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("thinking", help="ms per chunk for each chain length")
    t.add_argument("--policy", choices=("state", "vla"), default="state")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--rounds", type=int, default=15)
    t.add_argument("--calls", type=int, default=20)
    for name in ("warmup", "rl", "lengths"):
        c = sub.add_parser(name)
        c.add_argument("--task", default="stack")
        c.add_argument("--demos", type=int, default=10)
        c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        c.add_argument("--policy", choices=("state", "vla"), default="state")
        c.add_argument("--steps", type=int, help="SFT steps (default: 3000 for the state policy, 1500 for the VLA)")
        c.add_argument("--eval-episodes", type=int, default=50)
        c.add_argument("--out", default="outputs/bench/lapo_state")
        if name in ("warmup", "rl"):
            c.add_argument("--arms", nargs="+", choices=("plain", "latent"), default=["plain", "latent"])
        if name == "rl":
            c.add_argument("--iterations", type=int, default=30)
        if name == "lengths":
            c.add_argument("--episodes", type=int, default=20)
    a = p.parse_args()
    rows = {"thinking": thinking, "warmup": warmup, "rl": rl, "lengths": lengths}[a.command](a)
    suffix = "_vla" if getattr(a, "policy", "state") == "vla" else ""
    write_json(RESULTS / f"lapo_state_{a.command}{suffix}.json", a, rows=rows)


if __name__ == "__main__":
    main()

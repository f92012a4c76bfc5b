"""On-paper wall time of one LIBERO GRPO step at RLinf's published setting, on a GPU cluster.

Nothing here runs a model: it combines rates measured on this project's machines (BENCHMARKS.md)
with stated assumptions about the cluster, so that each input can be argued with or replaced.
The setting is RLinf's `examples/embodiment/config/libero_10_grpo_openvlaoft.yaml` (8 groups x 8
rollouts x 16 rollout epochs = 1024 episodes per step, at most 512 env steps, 8-action chunks, one
256 px camera), with pi0 (3.3B parameters, 816 prefix tokens, 10 denoising steps) as the policy.

Two placements of policy inference are compared, because they differ by an order of magnitude:
- `driver`: this project's design today (docs/SCALING.md): env workers spread over the cluster,
  every policy call batched in the one `vla rl` process, on its GPU;
- `per-gpu`: a policy copy on every GPU serving the envs of its node (weights pushed after each
  update), the layout RLinf and SimpleVLA-RL use.

    python benchmarks/projection_libero_grpo.py                   # the defaults below
    python benchmarks/projection_libero_grpo.py --mfu 0.25 --cores-per-node 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math

# Measured here (BENCHMARKS.md "Simulation steps per second"): robosuite/LIBERO step with its
# Python controller, physics only, per CPU-second of a worker.
LIBERO_STEPS_PER_CPU_S = 53.0
# Measured here: cheap-mode CPU rendering of LIBERO's agentview at 128 px, ms per frame.
RENDER_MS_128 = 43.0


def flops_per_chunk(params_prefix: float, params_expert: float, prefix_tokens: int, chunk: int,
                    denoise_steps: int) -> float:
    """Forward FLOPs of one sampled chunk: the prefix once (KV cache), the expert per denoising step."""
    return 2 * params_prefix * prefix_tokens + 2 * params_expert * chunk * denoise_steps


def project(a) -> dict:
    episodes = a.groups * a.group_size * a.rollout_epochs
    decisions_per_episode = math.ceil(a.mean_episode_steps / a.executed)
    env_steps = episodes * a.mean_episode_steps
    gpu_flops = a.gpu_peak_tflops * 1e12 * a.mfu
    cores = a.nodes * a.cores_per_node

    # Envs run `episodes / rollout_epochs` at a time (RLinf: 64 envs, 16 rounds of episodes); here
    # every core takes its share of all 1024 so that the cluster is busy: lock-step rounds of
    # `executed` env steps, one render per env per decision.
    envs_per_core = math.ceil(episodes / cores)
    step_s = 1.0 / LIBERO_STEPS_PER_CPU_S
    render_s = 0.0 if a.gpu_render else RENDER_MS_128 / 1000 * (a.camera_px / 128) ** 2
    env_round_s = envs_per_core * (a.executed * step_s + render_s)

    chunk_flops = flops_per_chunk(a.params_prefix, a.params_expert, a.prefix_tokens, a.chunk, a.denoise_steps)
    placements = {}
    for name, gpus_for_inference in (("driver", a.driver_gpus), ("per-gpu", a.nodes * a.gpus_per_node)):
        infer_round_s = episodes * chunk_flops / (gpus_for_inference * gpu_flops)
        # Env stepping and inference alternate within a round unless pipelined over two halves.
        round_s = max(env_round_s, infer_round_s) if a.pipelined else env_round_s + infer_round_s
        placements[name] = {"inference_s_per_round": infer_round_s, "round_s": round_s,
                            "rollout_s": decisions_per_episode * round_s}

    # Learner: old log-probs (forward) then `epochs` of forward + backward (3x forward) on every decision.
    samples = episodes * decisions_per_episode
    train_flops = samples * chunk_flops * (1 + 3 * a.epochs) if a.recompute_old_logprob else \
        samples * chunk_flops * 3 * a.epochs
    learner_s = train_flops / (a.nodes * a.gpus_per_node * gpu_flops)
    # Weight push: bf16 parameters to every node, over the slowest link.
    sync_s = 2 * (a.params_prefix + a.params_expert) / (a.link_gbyte_s * 1e9)
    for p in placements.values():
        p["sync_s"] = sync_s if p is placements["per-gpu"] else 0.0
        p["learner_s"] = learner_s
        p["step_s"] = p["rollout_s"] + learner_s + p["sync_s"]
        p["hours_for_steps"] = p["step_s"] * a.steps / 3600
    return {"inputs": vars(a), "episodes_per_step": episodes, "decisions_per_episode": decisions_per_episode,
            "env_steps_per_step": env_steps, "envs_per_core": envs_per_core, "env_round_s": env_round_s,
            "chunk_tflops": chunk_flops / 1e12, "learner_samples_per_step": samples, "placements": placements}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # RLinf's setting (libero_10_grpo_openvlaoft.yaml)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--rollout-epochs", type=int, default=16)
    p.add_argument("--mean-episode-steps", type=int, default=400,
                   help="assumed: successes end early, failures run to the 512-step limit")
    p.add_argument("--executed", type=int, default=8, help="actions executed per chunk")
    p.add_argument("--camera-px", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1, help="passes of the learner over each step's decisions")
    p.add_argument("--steps", type=int, default=100, help="GRPO steps to price")
    # pi0 (configs/policy/pi0.yaml)
    p.add_argument("--params-prefix", type=float, default=2.6e9)
    p.add_argument("--params-expert", type=float, default=0.3e9)
    p.add_argument("--prefix-tokens", type=int, default=816)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--denoise-steps", type=int, default=10)
    # The cluster (assumed)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--cores-per-node", type=int, default=96, help="cores free for env workers")
    p.add_argument("--driver-gpus", type=int, default=1, help="GPUs the driver's policy calls use today")
    p.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM)")
    p.add_argument("--mfu", type=float, default=0.35, help="fraction of peak reached (assumed)")
    p.add_argument("--link-gbyte-s", type=float, default=25.0, help="inter-node bandwidth for the weight push")
    p.add_argument("--gpu-render", action="store_true", default=True,
                   help="EGL on the nodes' GPUs: rendering time neglected (--cpu-render to charge it)")
    p.add_argument("--cpu-render", dest="gpu_render", action="store_false")
    p.add_argument("--pipelined", action="store_true", help="overlap env stepping with inference")
    p.add_argument("--no-old-logprob", dest="recompute_old_logprob", action="store_false")
    p.add_argument("--json")
    a = p.parse_args()
    out = project(a)
    print(f"{out['episodes_per_step']} episodes x {out['decisions_per_episode']} decisions per step, "
          f"{out['env_steps_per_step']:,} env steps, {out['envs_per_core']} envs per core, "
          f"env round {out['env_round_s']:.2f} s, {out['chunk_tflops']:.2f} TFLOP per chunk")
    print(f"{'placement':<10} {'infer/round s':>14} {'rollout s':>10} {'learner s':>10} {'sync s':>7} "
          f"{'step s':>8} {'h / ' + str(a.steps) + ' steps':>14}")
    for name, r in out["placements"].items():
        print(f"{name:<10} {r['inference_s_per_round']:>14.2f} {r['rollout_s']:>10.0f} {r['learner_s']:>10.0f} "
              f"{r['sync_s']:>7.1f} {r['step_s']:>8.0f} {r['hours_for_steps']:>14.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

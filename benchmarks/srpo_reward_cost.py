"""What SRPO's progress reward costs per RL iteration with each world-model encoder (issue 21).

One iteration's reward: embed every trajectory's video (n_frames frames sampled across the episode),
cluster the successes (DBSCAN) and grade the failures; here on random 64 px videos, half of them
"successes", through the same ProgressReward the trainer calls. Encoders:

    video          the small video encoder `vla train-world-model` trains (--video-encoder: its file)
    policy_vision  a frozen copy of the tiny-preset VLA's vision tower (the quickstart's policy size)
    vjepa2-tiny    a randomly initialised V-JEPA 2 at test size (the loading path; not a useful model)
    vjepa2-vitl    V-JEPA 2 ViT-L/16 at 256 px (the size users download), randomly initialised: the
                   cost of the real model's forward pass; timed on --vitl-trajectories videos only and
                   scaled to the batch, since a whole batch takes many minutes on a CPU

    python benchmarks/srpo_reward_cost.py --trajectories 32 --frames 16 \
        --video-encoder outputs/world_model/pick_place_can/encoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402  (benchmarks/common.py)

from vla.config import SRPOConfig  # noqa: E402
from vla.rl.srpo.encoders import build_encoder  # noqa: E402
from vla.rl.srpo.progress import ProgressReward  # noqa: E402


def rollouts(n: int, frames_per_episode: int, size: int, seed: int = 0) -> SimpleNamespace:
    """A batch of n trajectories with random uint8 frames, half successes, one task (what ProgressReward reads)."""
    rng = np.random.default_rng(seed)
    trajectories = [SimpleNamespace(index=i, group=i // 8, seed=i, task="pick the can", success=bool(i % 2),
                                    env_reward=float(rng.uniform()),
                                    frames=list(rng.integers(0, 256, (frames_per_episode, size, size, 3), np.uint8)))
                    for i in range(n)]
    return SimpleNamespace(trajectories=trajectories)


def vjepa2_folder(root: Path, size: str) -> Path:
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(0)
    if size == "tiny":
        config = VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0, crop_size=32,
                              patch_size=16, frames_per_clip=16, tubelet_size=2, pred_hidden_size=32,
                              pred_num_hidden_layers=1, pred_num_attention_heads=2, pred_num_mask_tokens=2)
    else:  # ViT-L/16, 256 px: transformers' VJEPA2Config defaults, the predictor cut to one layer (skipped anyway)
        config = VJEPA2Config(pred_num_hidden_layers=1)
    folder = root / f"vjepa2_{size}"
    VJEPA2Model(config).save_pretrained(folder)
    return folder


def time_reward(encoder, batch, n_frames: int, repeats: int) -> dict:
    reward = ProgressReward(encoder, SRPOConfig(encoder=encoder.name, n_frames=n_frames))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        rewards, stats = reward(batch)
        seconds.append(time.perf_counter() - start)
        assert torch.isfinite(rewards).all() and stats["progress_fallback"] == 0.0
    return {"encoder": encoder.name, "dim": encoder.dim, "median_s": float(np.median(seconds)),
            "min_s": float(min(seconds)), "trajectories": len(batch.trajectories)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trajectories", type=int, default=32)
    p.add_argument("--frames", type=int, default=16, help="frames embedded per trajectory (srpo.n_frames)")
    p.add_argument("--episode-frames", type=int, default=50, help="frames each trajectory holds (chunk boundaries)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--video-encoder", default="outputs/world_model/pick_place_can/encoder.safetensors")
    p.add_argument("--vitl-trajectories", type=int, default=1, help="0 skips the ViT-L row")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from vla.policy.config import PolicyConfig
    from vla.policy.flow_vla import FlowVLAPolicy

    batch = rollouts(a.trajectories, a.episode_frames, 64)
    torch.manual_seed(0)
    vla_policy = FlowVLAPolicy(PolicyConfig(preset="tiny", state_dim=8, action_dim=7)).eval()  # the quickstart's size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = [("video", SRPOConfig(encoder="video", encoder_path=a.video_encoder)),
                   ("policy_vision", SRPOConfig(encoder="policy_vision")),
                   ("vjepa2-tiny", SRPOConfig(encoder="vjepa2", n_frames=a.frames,
                                              encoder_path=str(vjepa2_folder(Path(tmp), "tiny"))))]
        if a.vitl_trajectories:
            configs.append(("vjepa2-vitl", SRPOConfig(encoder="vjepa2", n_frames=a.frames,
                                                      encoder_path=str(vjepa2_folder(Path(tmp), "vitl")))))
        for name, srpo in configs:
            if name == "video" and not Path(a.video_encoder).is_file():
                print(f"skipping the video encoder: {a.video_encoder} does not exist (vla train-world-model)")
                continue
            encoder = build_encoder(srpo, vla_policy, "agentview")
            sub = batch
            if name == "vjepa2-vitl":
                sub = SimpleNamespace(trajectories=batch.trajectories[: max(2, a.vitl_trajectories)])
            row = time_reward(encoder, sub, a.frames, 1 if name == "vjepa2-vitl" else a.repeats)
            row["name"] = name
            row["ms_per_iteration"] = 1000 * row["median_s"] * a.trajectories / row["trajectories"]
            row["ms_per_trajectory"] = 1000 * row["median_s"] / row["trajectories"]
            rows.append(row)
            print(json.dumps(row))
    print(f"\n{a.trajectories} trajectories x {a.frames} frames at 64 px, {a.threads} torch thread(s)\n")
    print("| encoder | embedding size | ms per trajectory | ms per iteration |\n|---|---|---|---|")
    for r in rows:
        scaled = " (scaled from %d)" % r["trajectories"] if r["trajectories"] != a.trajectories else ""
        print(f"| {r['name']} | {r['dim']} | {r['ms_per_trajectory']:.1f} | {r['ms_per_iteration']:.0f}{scaled} |")
    write_json(RESULTS / "srpo_reward_cost.json", a, rows=rows)


if __name__ == "__main__":
    main()

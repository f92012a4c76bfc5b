"""Load time and peak memory of a pi0-shaped (~3.3B parameter) lerobot checkpoint on CPU.

    python benchmarks/pretrained_load.py write DIR   # random bf16 weights, streamed to disk
    python benchmarks/pretrained_load.py load DIR    # run in a fresh process: peak RSS is per process

The checkpoint is written one tensor at a time (a hand-rolled safetensors writer), so writing
never holds the model in memory; the names and shapes are the published ones (lerobot's
`model.paligemma_with_expert...`), including the expert's unused token head.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "policy" / "fixtures" / "lerobot_pi0"
VOCAB = 257152


def published_shapes() -> dict[str, tuple[int, ...]]:
    from vla.policy.config import PolicyConfig
    from vla.policy.flow_vla import FlowVLAPolicy
    from vla.policy.foreign.pi0_names import to_lerobot

    cfg = PolicyConfig(preset="pi0", language="tokens", vocab_size=VOCAB, max_state_dim=32, max_action_dim=32,
                       prompt_format="pi0", cameras=["base", "left_wrist", "right_wrist"])
    with torch.device("meta"):
        policy = FlowVLAPolicy(cfg)
    shapes = {to_lerobot(n): tuple(p.shape) for n, p in policy.named_parameters()}
    shapes["model.paligemma_with_expert.gemma_expert.lm_head.weight"] = (VOCAB, cfg.expert_width)
    return shapes


def write_streaming(path: Path, shapes: dict[str, tuple[int, ...]], dtype=torch.bfloat16) -> None:
    header, offset = {}, 0
    size = torch.tensor([], dtype=dtype).element_size()
    for name, shape in shapes.items():
        n = size * int(torch.Size(shape).numel())
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    g = torch.Generator().manual_seed(0)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in shapes.items():
            t = (torch.randn(shape, generator=g, dtype=dtype) * 0.02).contiguous()
            f.write(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    tmp.rename(path)


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_streaming(directory / "model.safetensors", published_shapes())
    cfg = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())
    cfg.update(chunk_size=50, n_action_steps=50, num_inference_steps=10, max_state_dim=32, max_action_dim=32,
               image_resolution=[224, 224], tokenizer_max_length=48,
               input_features={**{f"observation.images.{c}": {"type": "VISUAL", "shape": [3, 224, 224]}
                                  for c in ("base", "left_wrist", "right_wrist")},
                               "observation.state": {"type": "STATE", "shape": [6]}})
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in (FIXTURE / "checkpoint").glob("policy_*"):
        shutil.copy(f, directory / f.name)  # state 6 / action 5 stats, as the features say
    shutil.copytree(FIXTURE / "tokenizer", directory / "tokenizer", dirs_exist_ok=True)
    print(f"wrote {directory} in {time.perf_counter() - start:.0f} s")


def load(directory: Path, dtype: str) -> None:
    from vla.policy.registry import load_policy

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    policy = load_policy(directory, dtype=dtype)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    # Tensors that need no dtype change stay backed by the file's memory map until first read:
    # touching every weight once shows the cost of actually paging them in.
    start = time.perf_counter()
    with torch.no_grad():
        for p in policy.parameters():
            p.float().sum() if p.numel() < 2**26 else p.view(-1)[:: 4096 // p.element_size()].sum()
    touch = time.perf_counter() - start
    peak_touched = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    n = sum(p.numel() for p in policy.parameters())
    size = sum(p.numel() * p.element_size() for p in policy.parameters()) / 2**30
    file_gb = (directory / "model.safetensors").stat().st_size / 2**30
    print(f"params {n / 1e9:.3f}B ({size:.2f} GiB in {dtype}); file {file_gb:.2f} GiB; load {seconds:.1f} s; "
          f"peak RSS {peak:.2f} GiB (before load {rss0:.2f} GiB); touching every page {touch:.1f} s, "
          f"peak RSS then {peak_touched:.2f} GiB")


if __name__ == "__main__":
    action, directory = sys.argv[1], Path(sys.argv[2])
    if action == "write":
        write(directory)
    else:
        load(directory, sys.argv[3] if len(sys.argv) > 3 else "bfloat16")

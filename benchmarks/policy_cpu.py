"""Policy speed on this machine: ms per action chunk (batch 1 and 16) and SFT samples/s.

Usage: python benchmarks/policy_cpu.py [--preset tiny] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_result  # noqa: E402

from vla.policy.config import PolicyConfig  # noqa: E402
from vla.policy.flow_vla import FlowVLAPolicy  # noqa: E402


def make(preset: str) -> FlowVLAPolicy:
    policy = FlowVLAPolicy(PolicyConfig(preset=preset))
    d_s, d_a = policy.config.state_dim, policy.config.action_dim
    policy.normalizer.load_stats({
        "observation.state": {"mean": torch.zeros(d_s), "std": torch.ones(d_s), "min": -torch.ones(d_s), "max": torch.ones(d_s)},
        "action": {"mean": torch.zeros(d_a), "std": torch.ones(d_a), "min": -torch.ones(d_a), "max": torch.ones(d_a)},
    })
    return policy


def batch_of(policy: FlowVLAPolicy, b: int) -> dict:
    c = policy.config
    return {
        **{f"observation.images.{cam}": torch.randint(0, 256, (b, c.image_size, c.image_size, 3), dtype=torch.uint8)
           for cam in c.cameras},
        "observation.state": torch.randn(b, c.state_dim),
        "task": ["lift the red cube"] * b,
        "action": torch.randn(b, c.chunk_size, c.action_dim),
        "action_is_pad": torch.zeros(b, c.chunk_size, dtype=torch.bool),
    }


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy = make(args.preset)
    rows = []
    policy.eval()
    for b in (1, 16):
        batch = batch_of(policy, b)
        with torch.no_grad():
            times = timed(lambda: policy.predict_action_chunk(batch), args.repeats)
        rows.append((f"inference, batch {b}, {policy.config.num_inference_steps} Euler steps",
                     f"{1000 * statistics.median(times):.1f} ms/chunk", f"p90 {1000 * sorted(times)[int(0.9 * len(times))]:.1f} ms"))
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    batch = batch_of(policy, 32)

    def step():
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    times = timed(step, max(5, args.repeats // 2))
    rows.append(("SFT step, batch 32 (forward+backward+AdamW)", f"{32 / statistics.median(times):.0f} samples/s",
                 f"{1000 * statistics.median(times):.0f} ms/step"))
    n_params = sum(p.numel() for p in policy.parameters())
    text = header(f"Policy speed, preset {args.preset} ({n_params / 1e6:.2f}M parameters), torch threads {torch.get_num_threads()}")
    text += "\n| what | median | note |\n|---|---|---|\n" + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in rows)
    write_result(f"policy_{args.preset}_cpu.md", text)


if __name__ == "__main__":
    main()

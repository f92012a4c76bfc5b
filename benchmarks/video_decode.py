"""Video datasets: PyAV decode throughput against PNG-in-parquet frames, and whether training waits on data.

    python benchmarks/video_decode.py --episodes 10 --length 60 --sizes 64 224 --train-steps 40

For each frame size, the same camera-like frames (a gradient, a moving box, a colour level
per frame) are written twice with vla.data's writer, as a 'video' feature (AV1 mp4) and as
an 'image' feature (PNG in parquet), and every frame is read back through LeRobotDataset:
- mp4 decode: decode_span over each whole file (PyAV alone), frames/s;
- dataset, video: every frame through the reader with decoding ahead off (whole episodes);
- dataset, PNG: every frame through the reader (one PNG decode per frame).
Then `vla train` (tiny preset, one camera) runs on the smallest size's video dataset with
decoding ahead on (the default) and off, and on the PNG dataset, and reports how long the loop
waited for its batches (train_summary.json's data_wait_seconds).

Writes benchmarks/results/video_decode.md and .json.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, header, write_json, write_result  # noqa: E402  (benchmarks/common.py)

from vla.data import LeRobotDataset, LeRobotDatasetWriter  # noqa: E402
from vla.data.video import decode_span  # noqa: E402

CAMERA = "observation.images.agentview"


def frame(t: int, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[..., 0] = x * 160 // size
    image[..., 1] = y * 200 // size
    image[..., 2] = (t * 47) % 256
    left = (t * 3) % (size - size // 4)
    image[size // 4 : size // 2, left : left + size // 4] = (250, 250, 20)
    return image


def write(root: Path, dtype: str, size: int, episodes: int, length: int) -> float:
    features = {
        CAMERA: {"dtype": dtype, "shape": [size, size, 3], "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [8], "names": None},
        "action": {"dtype": "float32", "shape": [7], "names": None},
    }
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with LeRobotDatasetWriter(root, fps=20, robot_type="panda", features=features) as writer:
        for e in range(episodes):
            for t in range(length):
                writer.add_frame({CAMERA: frame(e * length + t, size),
                                  "observation.state": rng.normal(size=8).astype(np.float32),
                                  "action": rng.uniform(-1, 1, 7).astype(np.float32)}, "lift the red cube")
            writer.save_episode()
    return time.perf_counter() - start


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def decode_rates(video: Path, png: Path, frames: int) -> dict[str, float]:
    files = sorted((video / "videos").rglob("*.mp4"))
    start = time.perf_counter()
    decoded = sum(len(decode_span(f, 0.0, 1e9)[1]) for f in files)
    mp4 = decoded / (time.perf_counter() - start)
    rates = {"mp4_decode_fps": mp4}
    for name, root in (("dataset_video_fps", video), ("dataset_png_fps", png)):
        ds = LeRobotDataset(root, decode_ahead=False)
        start = time.perf_counter()
        for i in range(len(ds)):
            ds.image(CAMERA, i)
        rates[name] = frames / (time.perf_counter() - start)
    return rates


def train_wait(dataset: Path, out: Path, steps: int, decode_ahead: bool) -> dict[str, float]:
    """`vla train` in this process; decode_ahead=False patches the reader's default for the run."""
    from vla.cli import main as vla_main

    original = LeRobotDataset.__init__
    if not decode_ahead:
        LeRobotDataset.__init__ = functools.partialmethod(original, decode_ahead=False)
    try:
        rc = vla_main(["train", f"--dataset={dataset}", f"--output_dir={out}", "--policy.depth=1",
                  "--policy.vision_layers=1", "--batch_size=8", f"--steps={steps}", "--log_every=10",
                  "--num_threads=1", "--overwrite=true"])
    finally:
        LeRobotDataset.__init__ = original
    if rc != 0:
        raise SystemExit(f"vla train failed with exit code {rc}")
    summary = json.loads((out / "train_summary.json").read_text())
    return {"seconds": summary["seconds"], "data_wait_seconds": summary["data_wait_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--length", type=int, default=60)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    p.add_argument("--train-steps", type=int, default=40)
    args = p.parse_args()
    frames = args.episodes * args.length
    rows, train_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            video, png = tmp / f"video{size}", tmp / f"png{size}"
            write_video_s = write(video, "video", size, args.episodes, args.length)
            write_png_s = write(png, "image", size, args.episodes, args.length)
            rates = decode_rates(video, png, frames)
            rows.append({"size": size, "frames": frames, "write_video_fps": frames / write_video_s,
                         "write_png_fps": frames / write_png_s, "video_bytes": folder_bytes(video),
                         "png_bytes": folder_bytes(png), **rates})
            print(rows[-1])
        small = min(args.sizes)
        for name, dataset, ahead in (("video, decoding ahead", tmp / f"video{small}", True),
                                     ("video, no decoding ahead", tmp / f"video{small}", False),
                                     ("PNG in parquet", tmp / f"png{small}", True)):
            result = train_wait(dataset, tmp / "train", args.train_steps, ahead)
            train_rows.append({"data": name, "size": small, **result})
            print(train_rows[-1])

    lines = [header("Video datasets: decode throughput and training waits"), "",
             "| frames | stored as | dataset size | write frames/s | read frames/s (reader) | mp4 decode alone |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['frames']} x {r['size']}x{r['size']} | AV1 mp4 | {r['video_bytes'] / 1e6:.2f} MB | "
                     f"{r['write_video_fps']:.0f} | {r['dataset_video_fps']:.0f} | {r['mp4_decode_fps']:.0f} |")
        lines.append(f"| {r['frames']} x {r['size']}x{r['size']} | PNG in parquet | {r['png_bytes'] / 1e6:.2f} MB | "
                     f"{r['write_png_fps']:.0f} | {r['dataset_png_fps']:.0f} | |")
    lines += ["", f"`vla train`, tiny preset, batch 8, {args.train_steps} steps, 1 torch thread:", "",
              "| data | loop seconds | waiting for batches |", "|---|---|---|"]
    for r in train_rows:
        lines.append(f"| {r['data']} ({r['size']}x{r['size']}) | {r['seconds']:.1f} | "
                     f"{r['data_wait_seconds']:.2f} s ({100 * r['data_wait_seconds'] / r['seconds']:.1f}%) |")
    write_result("video_decode.md", "\n".join(lines) + "\n")
    write_json(RESULTS / "video_decode.json", args, decode=rows, train=train_rows)


if __name__ == "__main__":
    main()

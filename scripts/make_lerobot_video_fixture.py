"""Write tests/data/fixtures/lerobot_video_ds: a small video dataset written by lerobot 0.4.4 itself.

Run with the project's Python; lerobot runs in its own venv (scripts/check_lerobot_compat.sh builds it):

    VLA_LEROBOT_PYTHON=~/.cache/vla/lerobot-0.4.4-venv/bin/python python scripts/make_lerobot_video_fixture.py

The frames are tests/data/video_helpers.camera_frames (64x64, a gradient with a moving box), two episodes
of 20 and 16 frames at 10 fps; state is the box's position, action the next position minus this one.
lerobot's LeRobotDataset.create / add_frame / save_episode / finalize write the dataset
(scripts/lerobot_video_compat.py `write`: its default AV1 encoding into mp4). The fixture is replaced whole.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.data.video_helpers import camera_frames  # noqa: E402

OUT = REPO / "tests" / "data" / "fixtures" / "lerobot_video_ds"
LENGTHS, FPS, SIZE = (20, 16), 10, 64


def source() -> dict[str, np.ndarray]:
    camera = np.concatenate([camera_frames(n, SIZE, SIZE, start=100 * e) for e, n in enumerate(LENGTHS)])
    states, actions = [], []
    for e, n in enumerate(LENGTHS):
        t = np.arange(100 * e, 100 * e + n + 1, dtype=np.float32)
        pos = np.stack([(t * 3) % (SIZE - SIZE // 4) / SIZE, np.full_like(t, 0.25 + 0.1 * e)], axis=1)
        states.append(pos[:-1])
        actions.append(pos[1:] - pos[:-1])
    return {"camera": camera, "state": np.concatenate(states).astype(np.float32),
            "action": np.concatenate(actions).astype(np.float32), "lengths": np.array(LENGTHS), "fps": np.array(FPS)}


def main() -> int:
    python = os.environ.get("VLA_LEROBOT_PYTHON")
    if not python:
        print("set VLA_LEROBOT_PYTHON to a Python with lerobot 0.4.4", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "frames.npz", **source())
        root = Path(tmp) / "ds"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(Path(tmp) / "home")}
        run = subprocess.run([python, str(REPO / "scripts" / "lerobot_video_compat.py"), "write", str(root),
                              str(Path(tmp) / "frames.npz")], env=env, capture_output=True, text=True)
        if run.returncode:
            print(run.stdout[-2000:], run.stderr[-4000:], file=sys.stderr)
            return 1
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        versions = subprocess.run([python, "-c", "import torch, torchvision, av; "
                                   "print(torch.__version__, torchvision.__version__, av.__version__)"],
                                  capture_output=True, text=True, check=True).stdout.split()
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(root, OUT)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(json.dumps({**summary, "torch": versions[0], "torchvision": versions[1], "av": versions[2],
                      "bytes": size, "out": str(OUT)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

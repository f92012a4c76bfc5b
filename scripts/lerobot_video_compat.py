"""Video datasets between lerobot and vla.data, run under a Python with lerobot 0.4.4 (not the project's).

    python scripts/lerobot_video_compat.py write ROOT FRAMES.npz   # lerobot writes a video dataset
    python scripts/lerobot_video_compat.py read ROOT OUT.npz       # lerobot reads one (pyav backend)

FRAMES.npz (from tests/data/test_lerobot_compat_video.py) holds `camera` uint8 [N, H, W, 3],
`state` float32 [N, 2], optionally `action` float32 [N, 2] (the state when absent), `lengths` int [E]
and `fps`: `write` records them as E episodes with
lerobot's own writer (use_videos=True, its default AV1 encoding). `read` opens a dataset with
lerobot's LeRobotDataset and its pyav video backend (torchcodec needs a system FFmpeg) and saves
every frame's camera (uint8 [N, H, W, 3]) and state to OUT.npz. Each prints one JSON line.
Imports nothing from vla.

lerobot 0.4.4's pyav backend decodes through `torchvision.io.VideoReader`, which torchvision removed
after 0.25 (lerobot pins torchvision < 0.26). In a lerobot venv built on this machine's torch 2.14.1 +
torchvision 0.29.1 (scripts/check_lerobot_compat.sh), `read` installs torchvision 0.25's own pyav-backend
VideoReader (the same calls, copied below) before lerobot decodes; with torchvision <= 0.25 it changes nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local root must never touch the hub

import numpy as np  # noqa: E402

CAMERA = "observation.images.front"


def write(root: Path, frames_path: Path) -> dict:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    with np.load(frames_path, allow_pickle=False) as npz:
        camera, state, lengths, fps = npz["camera"], npz["state"], npz["lengths"], int(npz["fps"])
        action = npz["action"] if "action" in npz.files else state
    features = {
        CAMERA: {"dtype": "video", "shape": tuple(camera.shape[1:]), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }
    ds = LeRobotDataset.create("local/vla_video_reference", fps=fps, features=features, root=root,
                               robot_type="panda", use_videos=True)
    i = 0
    for length in lengths.tolist():
        for _ in range(length):
            ds.add_frame({CAMERA: camera[i], "observation.state": state[i], "action": action[i],
                          "task": "stack the cubes"})
            i += 1
        ds.save_episode()
    ds.finalize()
    return {"written": i}


class _PyAVVideoReader:
    """torchvision 0.25's `torchvision.io.VideoReader`, pyav backend, video streams only: the seek and
    iteration lerobot's decode_video_frames_torchvision uses (torchvision/io/video_reader.py, BSD-3)."""

    def __init__(self, src: str, stream: str = "video", num_threads: int = 0) -> None:
        import av

        self.container = av.open(src, metadata_errors="ignore")
        stream_type = stream.split(":")[0]
        stream_id = 0 if len(stream.split(":")) == 1 else int(stream.split(":")[1])
        if stream_type != "video":
            raise ValueError("this stand-in reads video streams only")
        self.pyav_stream = {stream_type: stream_id}
        self._c = self.container.decode(**self.pyav_stream)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        import av
        import torch

        try:
            frame = next(self._c)
            pts = float(frame.pts * frame.time_base)
            frame = torch.as_tensor(frame.to_rgb().to_ndarray()).permute(2, 0, 1)
        except av.error.EOFError:
            raise StopIteration from None
        if frame.numel() == 0:
            raise StopIteration
        return {"data": frame, "pts": pts}

    def seek(self, time_s: float, keyframes_only: bool = False) -> "_PyAVVideoReader":
        time_s = max(time_s, 0)
        stream = self.container.streams.get(**self.pyav_stream)[0]
        self.container.seek(int(round(time_s / stream.time_base)), backward=True, any_frame=False, stream=stream)
        self._c = self.container.decode(**self.pyav_stream)
        return self


def _ensure_video_reader() -> bool:
    """Install the stand-in when torchvision has no VideoReader (torchvision > 0.25); True if installed."""
    import torchvision.io

    if hasattr(torchvision.io, "VideoReader"):
        return False
    torchvision.io.VideoReader = _PyAVVideoReader
    return True


def read(root: Path, out: Path) -> dict:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    shimmed = _ensure_video_reader()

    ds = LeRobotDataset("local/vla_video_compat", root=root, video_backend="pyav")
    cameras, states = [], []
    for i in range(ds.num_frames):
        item = ds[i]
        # lerobot returns float [3, H, W] in [0, 1]
        cameras.append((item[CAMERA].numpy() * 255.0).round().astype(np.uint8).transpose(1, 2, 0))
        states.append(item["observation.state"].numpy())
    np.savez(out, camera=np.stack(cameras), state=np.stack(states))
    return {"read": ds.num_frames, "video_keys": list(ds.meta.video_keys), "video_reader_shim": shimmed}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in ("write", "read"):
        print(__doc__, file=sys.stderr)
        return 2
    import lerobot

    action, root, path = argv[1], Path(argv[2]), Path(argv[3])
    result = write(root, path) if action == "write" else read(root, path)
    print(json.dumps({"lerobot_version": getattr(lerobot, "__version__", "unknown"), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

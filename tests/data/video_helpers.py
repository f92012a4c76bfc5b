"""Camera-like frames for the video tests, and an mp4 written with PyAV directly (not through vla.data).

Random noise is the worst case of a video codec (every pixel is detail); camera frames
are smooth with edges. These frames are a gradient with a moving box and a per-frame
colour level, so consecutive frames differ clearly and a frame served at the wrong
timestamp is told apart from the right one.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

# Codec error of these frames through AV1 (SVT-AV1, CRF 30, yuv420p), 60 frames, measured at 24x32, 64x64 and
# 224x224: mean absolute error 4.8, 2.8 and 3.7 of 255 per value (99th percentile 44, 26, 46; single values up
# to 235 on the box's edges, where yuv420p halves the colour resolution). The tests allow a mean of 8; the
# neighbouring frame is 27-34 away, so a frame served at the wrong timestamp fails.
MEAN_ABS_TOLERANCE = 8.0


def camera_frame(t: int, height: int, width: int, camera: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = (x * 160 // width + 40 * camera) % 256
    image[..., 1] = y * 200 // height
    image[..., 2] = (t * 47 + 30 * camera) % 256  # a flat level per frame: cheap to encode, far between frames
    left = (t * 3) % max(1, width - width // 4)
    image[height // 4 : height // 2, left : left + width // 4] = (250, 250, 20)
    return image


def camera_frames(n: int, height: int, width: int, camera: int = 0, start: int = 0) -> np.ndarray:
    return np.stack([camera_frame(start + t, height, width, camera) for t in range(n)])


def write_mp4_with_pyav(path: Path, frames: np.ndarray, fps: int, codec: str = "libsvtav1") -> None:
    """An mp4 the way lerobot's encoder writes one: frame k at k / fps, yuv420p, keyframe every 2 frames."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    time_base = Fraction(1, fps)
    with av.open(str(path), mode="w") as container:
        options = {"g": "2", "crf": "30", **({"preset": "12"} if codec == "libsvtav1" else {})}
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def nearest_original(decoded: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """For each decoded frame, the index of the original frame it is closest to."""
    d = np.abs(decoded[:, None].astype(np.int16) - originals[None].astype(np.int16)).mean(axis=(2, 3, 4))
    return d.argmin(axis=1)

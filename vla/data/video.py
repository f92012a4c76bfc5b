"""mp4 files through PyAV: one encoder per file, a decoder for a span of seconds, stream facts.

Encoding follows lerobot 0.4.4's defaults (AV1 with SVT-AV1, yuv420p, a keyframe
every 2 frames, CRF 30, preset 12), so our files decode like the Hub's; if the
PyAV build has no SVT-AV1 encoder we fall back to H.264, then MPEG-4 part 2
(docs/DECISIONS.md). Decoding goes through FFmpeg's default decoder for the
stream (dav1d for AV1 in PyAV's wheels), no system FFmpeg needed.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vla.data.errors import DatasetError

# In order of preference; the first one the PyAV build can encode with is used.
ENCODERS: tuple[str, ...] = ("libsvtav1", "libx264", "mpeg4")
PIX_FMT = "yuv420p"
# lerobot's defaults: g=2 keeps a seek within one frame of its target; crf 30 and preset 12 are its choice too
# (SVT-AV1 4.x maps preset 12 to 11 and says so).
_ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libsvtav1": {"g": "2", "crf": "30", "preset": "12"},
    "libx264": {"g": "2", "crf": "30"},
    "mpeg4": {"g": "2", "qscale": "3"},
}


class VideoError(DatasetError):
    """An mp4 file cannot be written or read (or PyAV is missing); the message names the file."""


def import_av():
    try:
        import av
    except ImportError as err:  # av is in the [train] extra, next to pyarrow
        raise VideoError("video datasets need PyAV: pip install 'vla-rl[train]' (or pip install av)") from err
    return av


def choose_encoder() -> str:
    """The first encoder of ENCODERS this PyAV build has."""
    av = import_av()
    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises different errors for an unknown codec across versions
            continue
        return name
    raise VideoError(f"this PyAV build ({av.__version__}) has none of the video encoders {list(ENCODERS)}")


class Mp4Writer:
    """Frames encoded into one new mp4 file, one stream at `fps` (frame k at k / fps seconds).

    The file is written under a temporary name and renamed on close(), so a file with
    the final name is always complete.
    """

    def __init__(self, path: str | os.PathLike[str], *, fps: int, height: int, width: int, encoder: str):
        av = import_av()
        self.path = Path(path)
        self.fps = int(fps)
        self.frames = 0
        self.bytes_written = 0  # compressed bytes out of the encoder (it holds some frames back until close)
        # Frame k shows at k / fps. Kept apart from the stream's time base, which the mp4 muxer changes when
        # it writes the header (to 1/10240 at 10 fps): frames stamped in that would all round to pts 0.
        self._frame_time_base = Fraction(1, self.fps)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._partial.parent.mkdir(parents=True, exist_ok=True)
        # SVT-AV1 logs a banner per encoder to stderr unless told otherwise (1 = errors only).
        os.environ.setdefault("SVT_LOG", "1")
        self._container = av.open(str(self._partial), mode="w", format="mp4")
        try:
            self._stream = self._container.add_stream(encoder, rate=self.fps, options=_ENCODER_OPTIONS.get(encoder, {}))
            self._stream.width, self._stream.height = int(width), int(height)
            self._stream.pix_fmt = PIX_FMT
            self._stream.time_base = self._frame_time_base
            self._stream.codec_context.open()  # fails here, not at the first frame, on sizes the encoder refuses
        except Exception as err:  # noqa: BLE001 - FFmpeg's errors name neither the file nor the size
            self._container.close()
            self._partial.unlink(missing_ok=True)
            raise VideoError(f"{self.path}: cannot encode {width}x{height} video with {encoder} ({err})") from err

    def add(self, frames: np.ndarray) -> None:
        """Append uint8 [N, H, W, 3] frames."""
        av = import_av()
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            frame.time_base = self._frame_time_base
            self._mux(self._stream.encode(frame))
            self.frames += 1

    def _mux(self, packets) -> None:
        self._container.mux(packets)
        self.bytes_written += sum(packet.size for packet in packets)

    def close(self) -> Path:
        """Flush the encoder, close the file and give it its final name."""
        self._mux(self._stream.encode())
        self._container.close()
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        _close_quietly(self._container)
        self._partial.unlink(missing_ok=True)


class Mp4Concatenation:
    """One mp4 file built from clips (mp4 files of the same encoder settings) played one after another.

    Packets are copied, not re-encoded, and shifted in time so clip j starts where clip
    j - 1 ended: lerobot's concatenation of episode videos, done by appending instead of
    rewriting the file for each episode. Written under a temporary name, renamed on close().
    """

    def __init__(self, path: str | os.PathLike[str], *, fps: int):
        self.path = Path(path)
        self.fps = int(fps)
        self.frames = 0
        self.bytes_written = 0
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._container = None
        self._stream = None

    def append(self, clip: Path, frames: int) -> None:
        """Copy the `frames` frames of `clip` to the end of the file."""
        av = import_av()
        with av.open(str(clip)) as source:
            stream = source.streams.video[0]
            if self._container is None:
                self._partial.parent.mkdir(parents=True, exist_ok=True)
                self._container = av.open(str(self._partial), mode="w", format="mp4")
                self._stream = self._container.add_stream_from_template(stream, opaque=True)
                self._stream.time_base = stream.time_base
                self._time_base = stream.time_base
            per_frame = Fraction(1, self.fps) / stream.time_base
            if stream.time_base != self._time_base or per_frame.denominator != 1:
                raise VideoError(f"{clip}: time base {stream.time_base} does not fit {self.path} "
                                 f"({self._time_base}, {self.fps} fps)")
            shift = self.frames * int(per_frame)
            for packet in source.demux(stream):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.pts += shift
                packet.dts += shift
                packet.stream = self._stream
                self._container.mux(packet)
                self.bytes_written += packet.size
        self.frames += int(frames)

    def close(self) -> Path:
        if self._container is None:
            raise VideoError(f"{self.path}: no clip appended")
        self._container.close()
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        if self._container is not None:
            _close_quietly(self._container)
        self._partial.unlink(missing_ok=True)


def _close_quietly(container) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001 - the file is deleted anyway
        pass


def stream_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The 'info' lerobot records for a video feature in meta/info.json, read from the file as lerobot does."""
    av = import_av()
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        info = {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(stream.base_rate),
            "video.channels": 3,
            "has_audio": bool(container.streams.audio),
        }
    return info


def decode_span(path: str | os.PathLike[str], start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of the file's first video stream shown from start_s to end_s (seconds, inclusive).

    Returns (uint8 [N, H, W, 3] frames, float64 [N] presentation times). One seek to the
    keyframe at or before start_s, then sequential decoding: per-frame seeks would decode
    the same group of pictures again for each frame.
    """
    av = import_av()
    frames: list[np.ndarray] = []
    times: list[float] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if start_s > 0:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if frame.time > end_s:
                    break
                if frame.time >= start_s:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(frame.time)
    except VideoError:
        raise
    except Exception as err:  # noqa: BLE001 - FFmpeg errors (truncated file, bad data) become one error that names the file
        raise VideoError(f"{path}: cannot decode ({type(err).__name__}: {err})") from err
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8), np.zeros(0)
    return np.stack(frames), np.asarray(times, dtype=np.float64)

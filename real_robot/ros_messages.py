"""Conversions between ROS 2 messages and arrays, with every check a malformed message can fail.

Checks raise MessageRejected(kind, reason); the node logs one rate-limited line
per kind and drops the message. Nothing here keeps state.
"""

from __future__ import annotations

import io
import math

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla.real_robot.robot_config import CameraConfig

RAW_ENCODINGS = ("rgb8", "bgr8")
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


class MessageRejected(ValueError):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(t: float) -> Time:
    sec = math.floor(t)
    return Time(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def seconds_to_duration(t: float) -> Duration:
    sec = math.floor(t)
    return Duration(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def joint_positions_from_msg(msg: JointState, joint_names: list[str]) -> np.ndarray:
    """The positions of `joint_names`, in that order. Names in the message beyond those are ignored
    (a gripper's fingers); a message without names must carry exactly len(joint_names) positions."""
    positions = list(msg.position)
    if msg.name:
        if len(msg.name) != len(positions):
            raise MessageRejected("joint_state_count",
                                  f"JointState has {len(msg.name)} names but {len(positions)} positions")
        if len(set(msg.name)) != len(msg.name):
            duplicates = sorted({name for name in msg.name if list(msg.name).count(name) > 1})
            raise MessageRejected("joint_state_duplicate_names",
                                  f"JointState names {duplicates} more than once: which value is the joint's?")
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [name for name in joint_names if name not in index]
        if missing:
            raise MessageRejected("joint_state_names", f"JointState lacks joints {missing}")
        q = np.array([positions[index[name]] for name in joint_names], dtype=np.float64)
    else:
        if len(positions) != len(joint_names):
            raise MessageRejected("joint_state_count",
                                  f"JointState has {len(positions)} unnamed positions, expected {len(joint_names)}")
        q = np.array(positions, dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise MessageRejected("joint_state_non_finite", "JointState has NaN/Inf positions")
    return q


def named_positions(msg: JointState, names: list[str]) -> np.ndarray | None:
    """Positions of optional extra joints (gripper fingers), or None if any is absent or named twice."""
    if len(msg.name) != len(msg.position) or len(set(msg.name)) != len(msg.name):
        return None
    index = {name: i for i, name in enumerate(msg.name)}
    if not all(name in index for name in names):
        return None
    return np.array([msg.position[index[name]] for name in names], dtype=np.float64)


def image_from_msg(msg: Image, camera: str, config: CameraConfig) -> np.ndarray:
    """uint8 [H, W, 3] RGB from a raw rgb8/bgr8 Image of the configured size."""
    if msg.encoding not in RAW_ENCODINGS:
        raise MessageRejected(f"image_encoding_{camera}",
                              f"camera {camera}: encoding {msg.encoding!r} is not one of {RAW_ENCODINGS}")
    if (msg.height, msg.width) != (config.height, config.width):
        raise MessageRejected(f"image_size_{camera}", f"camera {camera}: image is {msg.height}x{msg.width}, "
                                                      f"expected {config.height}x{config.width}")
    row = msg.width * 3
    # Only tightly packed rows: a header whose step disagrees with its width was read as a black
    # picture before; a camera driver that pads rows is rare enough to be told, not guessed at.
    if msg.step != row:
        raise MessageRejected(f"image_step_{camera}", f"camera {camera}: step {msg.step} is not width {msg.width} "
                                                      f"x 3 bytes (padded rows are not accepted)")
    if len(msg.data) != msg.step * msg.height:
        raise MessageRejected(f"image_size_{camera}", f"camera {camera}: {len(msg.data)} bytes do not match "
                                                      f"step {msg.step} x height {msg.height}")
    image = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, 3)
    return np.ascontiguousarray(image[..., ::-1] if msg.encoding == "bgr8" else image)


def compressed_topic(topic: str) -> str:
    """image_transport's name for the compressed stream of a raw image topic."""
    return topic if topic.endswith("/compressed") else topic + "/compressed"


def image_from_compressed(msg: CompressedImage, camera: str, config: CameraConfig) -> np.ndarray:
    """uint8 [H, W, 3] RGB from a jpeg/png CompressedImage of the configured size.

    image_transport writes `format` as "jpeg", "png" or e.g. "bgr8; jpeg compressed bgr8"; the
    payload itself must also be a JPEG or PNG (PIL would open many more formats, each one more
    decoder exposed to the network). The size is checked from the header, before decoding.
    """
    from PIL import Image as PILImage

    fmt = msg.format.lower()
    if not any(name in fmt for name in COMPRESSED_FORMATS):
        raise MessageRejected(f"image_encoding_{camera}",
                              f"camera {camera}: compressed format {msg.format!r} is not jpeg or png")
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data)), formats=("JPEG", "PNG")) as pil:
            if (pil.height, pil.width) != (config.height, config.width):
                raise MessageRejected(f"image_size_{camera}", f"camera {camera}: image is {pil.height}x{pil.width}, "
                                                              f"expected {config.height}x{config.width}")
            image = np.asarray(pil.convert("RGB"))
    except MessageRejected:
        raise
    except Exception as exc:
        raise MessageRejected(f"image_decode_{camera}",
                              f"camera {camera}: cannot decode {msg.format!r} image: {exc}") from exc
    return image


def compressed_image_msg(image: np.ndarray, stamp: float, frame_id: str = "", fmt: str = "jpeg",
                         quality: int = 90) -> CompressedImage:
    """A CompressedImage as image_transport's compressed plugin would publish an rgb8 frame."""
    from PIL import Image as PILImage

    fmt = fmt.lower()
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"format must be jpeg or png, got {fmt!r}")
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "jpeg" else {"compress_level": 1}
    PILImage.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format=fmt.upper(), **options)
    msg = CompressedImage(format=f"rgb8; {fmt} compressed rgb8")
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.data = buffer.getvalue()
    return msg


def image_msg(image: np.ndarray, stamp: float, frame_id: str = "") -> Image:
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.shape}")
    msg = Image(height=image.shape[0], width=image.shape[1], encoding="rgb8", is_bigendian=0,
                step=image.shape[1] * 3)
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.data = image.tobytes()
    return msg


def joint_state_msg(names: list[str], positions: np.ndarray, velocities: np.ndarray | None, stamp: float) -> JointState:
    msg = JointState(name=list(names), position=[float(x) for x in positions])
    if velocities is not None:
        msg.velocity = [float(x) for x in velocities]
    msg.header.stamp = seconds_to_stamp(stamp)
    return msg


def joint_trajectory_msg(names: list[str], positions: np.ndarray, velocities: np.ndarray | None,
                         time_from_start_s: float, stamp: float | None) -> JointTrajectory:
    """A one-point trajectory: reach `positions` `time_from_start_s` after `stamp`, or, with
    stamp None, after the controller receives it (header.stamp zero). `velocities` None leaves the
    point's velocities empty: joint_trajectory_controller then interpolates linearly, and accepts
    it without allow_nonzero_velocity_at_trajectory_end (real_robot/jtc_rules.py)."""
    if not time_from_start_s > 0:
        raise ValueError(f"time_from_start must be positive, got {time_from_start_s}")
    point = JointTrajectoryPoint(positions=[float(x) for x in positions],
                                 time_from_start=seconds_to_duration(time_from_start_s))
    if velocities is not None:
        point.velocities = [float(x) for x in velocities]
    msg = JointTrajectory(joint_names=list(names), points=[point])
    if stamp is not None:
        msg.header.stamp = seconds_to_stamp(stamp)
    return msg


def forward_position_msg(positions: np.ndarray) -> Float64MultiArray:
    msg = Float64MultiArray(data=[float(x) for x in positions])
    msg.layout.dim = [MultiArrayDimension(label="joints", size=len(msg.data), stride=len(msg.data))]
    return msg


def command_from_msg(msg, joint_names: list[str]) -> np.ndarray:
    """Joint targets out of a JointTrajectory (its last point) or Float64MultiArray, in `joint_names` order."""
    if isinstance(msg, Float64MultiArray):
        q = np.array(msg.data, dtype=np.float64)
        if q.shape != (len(joint_names),):
            raise MessageRejected("command_count", f"command has {q.shape[0]} values, expected {len(joint_names)}")
    else:
        if not msg.points:
            raise MessageRejected("command_empty", "JointTrajectory has no points")
        index = {name: i for i, name in enumerate(msg.joint_names)}
        missing = [name for name in joint_names if name not in index]
        point = msg.points[-1]
        if missing or len(point.positions) != len(msg.joint_names):
            raise MessageRejected("command_count", f"JointTrajectory joints {list(msg.joint_names)} do not cover "
                                                   f"{joint_names} with one position each")
        q = np.array([point.positions[index[name]] for name in joint_names], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise MessageRejected("command_non_finite", "command has NaN/Inf")
    return q

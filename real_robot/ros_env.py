"""Environment rclpy needs when ROS 2 comes from the PyPI wheels (the `[ros]` extra), and its import.

The wheels ship their shared libraries in site-packages/ros_*.libs; the
`ros-wheels-bootstrapper` wheel (a dependency of ros-rclpy) re-executes every
Python of the venv once with LD_LIBRARY_PATH pointing there. What is left for us:
- RMW_IMPLEMENTATION: only Fast DDS is installed, say so explicitly, so a
  leftover value from a system ROS install cannot pick a missing middleware;
- ROS_DOMAIN_ID and the discovery range, which tests set per run to stay
  off every other ROS graph on the machine.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from vla.errors import UserError

DEFAULT_RMW = "rmw_fastrtps_cpp"


class RosUnavailableError(UserError, ImportError):
    """rclpy (the `[ros]` extra) cannot be imported in this interpreter."""


def prepare_ros_environment(domain_id: int | None = None, localhost_only: bool = False) -> None:
    """Set the variables rclpy reads at init; call before rclpy.init()."""
    os.environ.setdefault("RMW_IMPLEMENTATION", DEFAULT_RMW)
    if domain_id is not None:
        if not 0 <= int(domain_id) <= 232:
            raise ValueError(f"ROS_DOMAIN_ID must be in 0..232, got {domain_id}")
        os.environ["ROS_DOMAIN_ID"] = str(int(domain_id))
    if localhost_only:
        # Kilted's replacement for ROS_LOCALHOST_ONLY: discovery never leaves loopback.
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def import_rclpy() -> ModuleType:
    """Import rclpy after preparing the environment, or raise RosUnavailableError saying why."""
    prepare_ros_environment()
    try:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor  # noqa: F401  (loads the C extension)
    except ImportError as exc:
        hint = ("install the ROS 2 wheels: pip install 'vla-rl[ros]' (ros-rclpy, ros-sensor-msgs, "
                "ros-std-msgs, ros-std-srvs, ros-trajectory-msgs, ros-rmw-fastrtps-cpp)")
        if "lib" in str(exc) and ".so" in str(exc):
            hint = (f"a ROS shared library was not found; run with the venv's python ({sys.executable}) so "
                    "ros-wheels-bootstrapper sets LD_LIBRARY_PATH, or add site-packages/ros_*.libs to it")
        raise RosUnavailableError(f"rclpy cannot be imported ({exc}): {hint}") from exc
    return rclpy

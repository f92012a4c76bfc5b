"""Joining a Ray cluster for the Ray backend, failing fast and by name when that cannot work.

``ray.init(address=...)`` to an address where nothing listens retries for minutes (measured: over
90 s with Ray 2.60) before it gives up, with log lines that do not say which setting was wrong. So a
``host:port`` address is first probed with one TCP connection (seconds), and every failure is raised
as a RayBackendError naming the address and the reason.
"""

from __future__ import annotations

import os
import socket

from vla.errors import UserError

# Seconds to wait for the head node's GCS port to accept a TCP connection.
PROBE_TIMEOUT_S = 5.0


class RayBackendError(UserError, RuntimeError):
    """The Ray backend cannot run as asked: no Ray, no cluster at the address, mismatched workers."""


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayBackendError("--backend ray needs the Ray package: pip install 'vla-rl[ray]'") from exc
    return ray


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); RayBackendError naming the address if it is not one."""
    if "://" in address:  # ray://: Ray Client, which runs the driver's calls through a proxy
        raise RayBackendError(f"--ray_address {address!r}: Ray Client (ray://) addresses are not supported; "
                              "give the head node's host:port (ray start --head --port, 6379 by default) or auto")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayBackendError(f"--ray_address {address!r} is not 'auto' or host:port (e.g. 10.0.0.5:6379)")
    return host.strip("[]"), int(port)  # [::1]:6379 -> ::1


def probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise RayBackendError unless something accepts TCP connections at ``address``."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:  # refused, unresolvable host, timeout, no route
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, socket.timeout):
            reason = f"no answer within {timeout_s:g} s"
        raise RayBackendError(f"cannot reach the Ray cluster at --ray_address {address}: {reason} "
                              "(is `ray start --head` running there, and is the port open?)") from None


def connect(address: str | None) -> bool:
    """Make sure this process is connected to Ray; whether this call connected it (then the caller
    disconnects with ``ray.shutdown()`` when done, which also stops a local instance it started).

    None starts a local instance (this machine's cores); "auto" joins the cluster that
    ``ray start`` runs on this machine; host:port joins that head node. A process already connected
    (a test fixture, a user's own ``ray.init``) keeps its connection.
    """
    ray = import_ray()
    if address not in (None, "auto"):
        probe(address)  # even when already connected: a wrong address is a wrong setting
    if ray.is_initialized():
        return False
    if address is None:
        start_local(ray)
        return True
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayBackendError(f"cannot join the Ray cluster at --ray_address {address}: {exc}") from None
    return True


def start_local(ray, **init_kwargs) -> None:
    """Start a local Ray instance whose workers run at this process's priority.

    Ray starts worker processes at nice 15 by default (RAY_worker_niceness), so that its own daemons
    stay responsive. For env and rollout workers that is the wrong trade: with any other load on the
    machine they get a few per cent of a core. Measured on the 2-core VM under load 3: one Lift
    env.step took 146 ms in a Ray worker against 12 ms in a local worker process, and 12 ms with
    the niceness at 0. A value the user set is kept; nodes started with `ray start` take theirs from
    that command's environment (docs/SCALING.md).
    """
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(include_dashboard=False, log_to_driver=False, **init_kwargs)


def parse_resources(text: str) -> dict[str, float]:
    """``"sim=1,big_node=0.5"`` -> {"sim": 1.0, "big_node": 0.5}; RayBackendError naming a bad entry."""
    resources: dict[str, float] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, amount = entry.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or not value > 0:
            raise RayBackendError(f"--ray_resources: {entry!r} is not name=amount with a positive amount "
                                  "(e.g. sim=1,big_node=0.5)")
        resources[name.strip()] = value
    return resources

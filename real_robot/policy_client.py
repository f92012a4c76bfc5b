"""Blocking client for PolicyServer; meant for the robot's inference thread, never the control loop.

A lost connection fails that call (the node then holds the arm: no new chunks) and is
re-opened by a later call, at most once per reconnect_interval_s, so a restarted server
is picked up without restarting the robot's node.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from vla.real_robot.policy_server import PROTOCOL_VERSION
from vla.real_robot.wire_format import WireFormatError, pack, unpack


# lerobot's batch keys, as vla.policy.observation writes them (kept literal: no torch import here).
IMAGE_PREFIX, STATE_KEY = "observation.images.", "observation.state"


def numpy_batch(observation: dict, cameras: list[str]) -> dict:
    """One observation as a batch of one in numpy: what a robot without torch sends to the server."""
    batch = {IMAGE_PREFIX + cam: np.ascontiguousarray(observation["images"][cam], dtype=np.uint8)[None]
             for cam in cameras}
    batch[STATE_KEY] = np.asarray(observation["state"], dtype=np.float32)[None]
    batch["task"] = [observation["task"]]
    return batch


class RemotePolicyError(RuntimeError):
    """The server answered with an error, or with something that is not a valid reply."""


class PolicyClient:
    """`predict_action_chunk(batch) -> np.ndarray [B, H, A]` over a websocket, like a local policy."""

    def __init__(self, url: str, timeout_s: float = 10.0, max_message_bytes: int = 32 << 20,
                 reconnect_interval_s: float = 1.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        # A lost server (restarted, network blip) is retried at most this often, from predict_action_chunk.
        self.reconnect_interval_s = reconnect_interval_s
        self.reconnects = 0
        self.last_inference_ms: float | None = None
        self.metadata: dict = {}
        self._ids = itertools.count(1)
        self._connection = None
        self._last_attempt = -float("inf")
        self._connect()

    def _connect(self) -> None:
        from websockets.sync.client import connect

        self._last_attempt = time.monotonic()
        # Entered here, closed by close(): this object owns the connection's lifetime.
        self._connection = connect(self.url, open_timeout=self.timeout_s, max_size=self.max_message_bytes,
                                   compression=None, proxy=None).__enter__()
        hello = self._receive()
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            self.close()
            raise RemotePolicyError(f"{self.url} did not greet as a policy server: {hello!r}")
        if hello.get("protocol") != PROTOCOL_VERSION:
            self.close()
            raise RemotePolicyError(f"{self.url} speaks protocol {hello.get('protocol')}, "
                                    f"this client {PROTOCOL_VERSION}")
        self.metadata = hello.get("metadata") or {}

    def predict_action_chunk(self, batch: dict[str, Any]) -> np.ndarray:
        from websockets.exceptions import ConnectionClosed

        if self._connection is None:
            if time.monotonic() - self._last_attempt < self.reconnect_interval_s:
                raise RemotePolicyError(f"not connected to {self.url}; retrying every {self.reconnect_interval_s} s")
            try:
                self._connect()
            except Exception as exc:  # refused, timed out, or not a policy server (yet)
                self.close()
                raise RemotePolicyError(f"cannot reconnect to {self.url}: {exc}") from exc
            self.reconnects += 1
        try:
            return self._request(batch)
        except (ConnectionClosed, OSError) as exc:
            self.close()  # reconnect on a later call, one interval from now
            self._last_attempt = time.monotonic()
            raise RemotePolicyError(f"connection to {self.url} lost: {exc}") from exc

    def _request(self, batch: dict[str, Any]) -> np.ndarray:
        request_id = next(self._ids)
        self._connection.send(pack({"type": "predict", "id": request_id, "batch": batch}))
        reply = self._receive()
        # A reply to an earlier request that timed out may still arrive first: skip it.
        while isinstance(reply, dict) and isinstance(reply.get("id"), int) and reply["id"] < request_id:
            reply = self._receive()
        if not isinstance(reply, dict):
            raise RemotePolicyError(f"reply is not a map: {reply!r}")
        if reply.get("type") == "error":
            raise RemotePolicyError(f"server refused the request: {reply.get('error')}")
        if reply.get("type") != "actions" or reply.get("id") != request_id:
            raise RemotePolicyError(f"unexpected reply type={reply.get('type')!r} id={reply.get('id')!r}"
                                    f" for request {request_id}")
        actions = reply.get("actions")
        if not isinstance(actions, np.ndarray):
            raise RemotePolicyError("reply carries no action array")
        self.last_inference_ms = reply.get("inference_ms")
        return actions

    def _receive(self) -> Any:
        try:
            frame = self._connection.recv(timeout=self.timeout_s)
        except TimeoutError as exc:
            raise RemotePolicyError(f"no reply from {self.url} within {self.timeout_s} s") from exc
        try:
            return unpack(frame, self.max_message_bytes)
        except WireFormatError as exc:
            raise RemotePolicyError(f"undecodable reply from {self.url}: {exc}") from exc

    # The node may raise this client's threads to real-time priority: they wait on a socket, and the
    # model's compute happens in another process (PolicyNode, realtime_priority).
    runs_out_of_process = True

    def io_thread_ids(self) -> list[int]:
        """Native ids of the connection's own threads (websockets' receiver and keepalive), which hold
        the GIL while they parse a frame. One opened later by a reconnect from a real-time thread
        inherits its scheduling."""
        connection = self._connection
        threads = [getattr(connection, "recv_events_thread", None), getattr(connection, "keepalive_thread", None)]
        return [t.native_id for t in threads if t is not None and t.is_alive() and t.native_id is not None]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

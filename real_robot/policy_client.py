"""Blocking client for PolicyServer; meant for the robot's inference thread, never the control loop."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from vla.real_robot.policy_server import PROTOCOL_VERSION
from vla.real_robot.wire_format import WireFormatError, pack, unpack


class RemotePolicyError(RuntimeError):
    """The server answered with an error, or with something that is not a valid reply."""


class PolicyClient:
    """`predict_action_chunk(batch) -> np.ndarray [B, H, A]` over a websocket, like a local policy."""

    def __init__(self, url: str, timeout_s: float = 10.0, max_message_bytes: int = 32 << 20) -> None:
        from websockets.sync.client import connect

        self.url = url
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self.last_inference_ms: float | None = None
        self._ids = itertools.count(1)
        # Entered here, closed by close(): this object owns the connection's lifetime.
        self._connection = connect(url, open_timeout=timeout_s, max_size=max_message_bytes, compression=None,
                                   proxy=None).__enter__()
        hello = self._receive()
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            self.close()
            raise RemotePolicyError(f"{url} did not greet as a policy server: {hello!r}")
        if hello.get("protocol") != PROTOCOL_VERSION:
            self.close()
            raise RemotePolicyError(f"{url} speaks protocol {hello.get('protocol')}, this client {PROTOCOL_VERSION}")
        self.metadata: dict = hello.get("metadata") or {}

    def predict_action_chunk(self, batch: dict[str, Any]) -> np.ndarray:
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

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

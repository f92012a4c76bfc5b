"""Serve any object with `predict_action_chunk(batch)` over websockets (msgpack-numpy, no pickle).

For robots without a GPU: the robot computer runs PolicyClient, a GPU machine
runs this server. Protocol (every frame binary, see wire_format):
  server -> client on connect: {"type": "hello", "protocol": 1, "metadata": {...}}
  client -> server: {"type": "predict", "id": int, "batch": {name: array | str | [str]}}
  server -> client: {"type": "actions", "id": int, "actions": array [B, H, A], "inference_ms": float}
                 or {"type": "error", "id": int | None, "error": str}
A malformed request gets an error reply; the connection and the server live on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from vla.real_robot.rate_limited_log import RateLimitedLog
from vla.real_robot.wire_format import WireFormatError, pack, unpack

PROTOCOL_VERSION = 1
_log = logging.getLogger("vla.real_robot.policy_server")


class PolicyServer:
    def __init__(self, policy: Any, host: str = "127.0.0.1", port: int = 8000,
                 batch_transform: Callable[[dict], Any] | None = None, metadata: dict | None = None,
                 max_message_bytes: int = 32 << 20) -> None:
        if not callable(getattr(policy, "predict_action_chunk", None)):
            raise TypeError(f"{type(policy).__name__} has no predict_action_chunk(batch)")
        self.policy = policy
        self.host, self.port = host, port
        # e.g. numpy -> torch tensors on the policy's device; identity by default.
        self.batch_transform = batch_transform
        self.metadata = dict(metadata or {})
        self.max_message_bytes = max_message_bytes
        self.requests_served = 0
        self.errors_replied = 0
        self._policy_lock = threading.Lock()  # one inference at a time, whatever the number of clients
        self._rlog = RateLimitedLog(_log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ message handling (no network)
    def handle_message(self, data: Any) -> bytes:
        """The packed reply to one request frame; never raises."""
        request_id = None
        try:
            if isinstance(data, str):
                raise WireFormatError("text frames are not accepted; send binary msgpack")
            request = unpack(data, self.max_message_bytes)
            if not isinstance(request, dict):
                raise WireFormatError(f"request must be a map, got {type(request).__name__}")
            request_id = request.get("id")
            if request_id is not None and (not isinstance(request_id, int) or isinstance(request_id, bool)):
                request_id = None
                raise WireFormatError("request id must be an int")
            if request.get("type") != "predict":
                raise WireFormatError(f"unknown request type {request.get('type')!r}")
            batch = request.get("batch")
            _check_batch(batch)
            start = time.perf_counter()
            actions = self._predict(batch)
            inference_ms = (time.perf_counter() - start) * 1e3
            self.requests_served += 1
            return pack({"type": "actions", "id": request_id, "actions": actions, "inference_ms": inference_ms})
        except Exception as exc:  # every failure becomes a reply; the server must keep serving
            self.errors_replied += 1
            self._rlog.log(type(exc).__name__, f"refused request: {exc}")
            return pack({"type": "error", "id": request_id, "error": f"{type(exc).__name__}: {exc}"})

    def _predict(self, batch: dict) -> np.ndarray:
        inputs = self.batch_transform(batch) if self.batch_transform else batch
        with self._policy_lock:
            out = self.policy.predict_action_chunk(inputs)
        if hasattr(out, "detach"):  # torch tensor, without importing torch here
            out = out.detach().cpu().numpy()
        actions = np.asarray(out)
        if actions.ndim != 3 or not np.issubdtype(actions.dtype, np.floating):
            raise ValueError(f"policy returned {actions.dtype} {actions.shape}, expected float [B, H, A]")
        return actions

    # ------------------------------------------------------------ network
    async def _handler(self, connection) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await connection.send(pack({"type": "hello", "protocol": PROTOCOL_VERSION, "metadata": self.metadata}))
            async for frame in connection:
                reply = await asyncio.to_thread(self.handle_message, frame)
                await connection.send(reply)
        except ConnectionClosed:  # the client left, or the server is stopping: nothing to answer
            pass

    async def serve(self, ready: threading.Event | None = None) -> None:
        """Serve until stop(); sets self.port to the bound port (useful with port=0)."""
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, self.port, max_size=self.max_message_bytes,
                         compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            _log.info("policy server on ws://%s:%d", self.host, self.port)
            if ready is not None:
                ready.set()
            await self._stop.wait()

    def serve_forever(self) -> None:
        asyncio.run(self.serve())

    def start(self, timeout_s: float = 10.0) -> int:
        """Serve from a background thread; returns the bound port."""
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve(ready)), name="policy-server",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise RuntimeError(f"policy server did not start on {self.host}:{self.port} within {timeout_s} s")
        return self.port

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and close every connection; a second call does nothing."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed between the check and the call
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


def _check_batch(batch: Any, depth: int = 0) -> None:
    """A batch is a non-empty map of name -> array | str | [str] | (nested map, e.g. images by camera)."""
    if not isinstance(batch, dict) or not batch:
        raise WireFormatError("batch must be a non-empty map of name -> array | str | [str] | map")
    for key, value in batch.items():
        if isinstance(value, (np.ndarray, str)):
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            continue
        if isinstance(value, dict) and depth < 2:
            _check_batch(value, depth + 1)
            continue
        raise WireFormatError(f"batch entry {key!r} is a {type(value).__name__}, expected array, str, [str] or map")

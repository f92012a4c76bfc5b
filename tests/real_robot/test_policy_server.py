"""Policy server and client over a real websocket on 127.0.0.1 with a tiny fake policy."""

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from vla.real_robot.policy_client import PolicyClient, RemotePolicyError
from vla.real_robot.policy_server import PolicyServer
from vla.real_robot.wire_format import pack, unpack

HORIZON, ACTION_DIM = 4, 7


class FakePolicy:
    """Chunk whose rows are state + row index: the output proves the input crossed the wire intact."""

    def __init__(self):
        self.calls = 0

    def predict_action_chunk(self, batch):
        self.calls += 1
        state = np.asarray(batch["state"], dtype=np.float32)
        if state.ndim != 2 or state.shape[1] != ACTION_DIM:
            raise ValueError(f"state must be [B, {ACTION_DIM}], got {state.shape}")
        if batch["images"]["agentview"].dtype != np.uint8:
            raise ValueError("images must be uint8")
        return state[:, None, :] + np.arange(HORIZON, dtype=np.float32)[None, :, None]


def make_batch(b: int = 2) -> dict:
    rng = np.random.default_rng(0)
    return {"state": rng.normal(size=(b, ACTION_DIM)).astype(np.float32),
            "images": {"agentview": rng.integers(0, 255, size=(b, 3, 16, 16), dtype=np.uint8)},
            "task": ["lift the cube"] * b}


@pytest.fixture
def server():
    srv = PolicyServer(FakePolicy(), host="127.0.0.1", port=0, metadata={"action_dim": ACTION_DIM})
    port = srv.start()
    yield srv, f"ws://127.0.0.1:{port}"
    srv.stop()


def test_round_trip_returns_the_policy_chunk(server):
    srv, url = server
    batch = make_batch()
    with PolicyClient(url, timeout_s=5.0) as client:
        assert client.metadata == {"action_dim": ACTION_DIM}
        for _ in range(3):
            actions = client.predict_action_chunk(batch)
            expected = batch["state"][:, None, :] + np.arange(HORIZON, dtype=np.float32)[None, :, None]
            assert actions.dtype == np.float32 and actions.shape == (2, HORIZON, ACTION_DIM)
            np.testing.assert_array_equal(actions, expected)
            assert client.last_inference_ms is not None and client.last_inference_ms >= 0
    assert srv.requests_served == 3 and srv.policy.calls == 3


def test_policy_errors_come_back_as_errors_and_the_server_lives_on(server):
    srv, url = server
    with PolicyClient(url, timeout_s=5.0) as client:
        bad = make_batch()
        bad["state"] = np.zeros((2, 3), np.float32)
        with pytest.raises(RemotePolicyError, match="state must be"):
            client.predict_action_chunk(bad)
        with pytest.raises(RemotePolicyError, match="batch entry"):
            client.predict_action_chunk({"state": {"nested": 1}, "images": {}})
        assert client.predict_action_chunk(make_batch()).shape == (2, HORIZON, ACTION_DIM)


@pytest.mark.parametrize("frame, fragment", [
    (b"\xc1 not msgpack", "msgpack"),
    ("a text frame", "text frames"),
    (pack([1, 2, 3]), "must be a map"),
    (pack({"type": "train", "id": 1}), "unknown request type"),
    (pack({"type": "predict", "id": 1, "batch": {}}), "non-empty"),
    (pack({"type": "predict", "id": "x", "batch": {"s": np.zeros(2)}}), "id must be an int"),
])
def test_malformed_frames_get_an_error_reply_on_a_live_connection(server, frame, fragment):
    srv, url = server
    with connect(url, open_timeout=5, proxy=None) as ws:
        assert unpack(ws.recv(timeout=5))["type"] == "hello"
        ws.send(frame)
        reply = unpack(ws.recv(timeout=5))
        assert reply["type"] == "error" and fragment in reply["error"]
        # The same connection still serves a good request.
        ws.send(pack({"type": "predict", "id": 7, "batch": make_batch(1)}))
        reply = unpack(ws.recv(timeout=5))
        assert reply["type"] == "actions" and reply["id"] == 7 and reply["actions"].shape == (1, HORIZON, ACTION_DIM)
    assert srv.errors_replied == 1


def test_oversize_frame_closes_that_connection_only():
    srv = PolicyServer(FakePolicy(), port=0, max_message_bytes=4096)
    url = f"ws://127.0.0.1:{srv.start()}"
    try:
        with connect(url, open_timeout=5, proxy=None) as ws:
            ws.recv(timeout=5)
            ws.send(pack({"type": "predict", "id": 1, "batch": {"state": np.zeros(10_000)}}))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
        with PolicyClient(url, timeout_s=5.0) as client:  # the server still serves
            assert client.predict_action_chunk(make_batch(1)).shape == (1, HORIZON, ACTION_DIM)
    finally:
        srv.stop()


def test_handle_message_never_raises_without_network():
    srv = PolicyServer(FakePolicy())
    for frame in (b"", b"\x00", 12345, None, pack({"type": "predict", "batch": {"state": "x"}})):
        reply = unpack(srv.handle_message(frame))
        assert reply["type"] == "error"


def test_server_refuses_objects_without_predict_action_chunk():
    with pytest.raises(TypeError, match="predict_action_chunk"):
        PolicyServer(object())


def test_client_reconnects_to_a_restarted_server_at_most_once_per_interval():
    import time

    srv = PolicyServer(FakePolicy(), port=0)
    port = srv.start()
    client = PolicyClient(f"ws://127.0.0.1:{port}", timeout_s=5.0, reconnect_interval_s=0.3)
    try:
        assert client.predict_action_chunk(make_batch(1)).shape == (1, HORIZON, ACTION_DIM)
        srv.stop()
        srv.stop()  # idempotent
        with pytest.raises(RemotePolicyError, match="lost|reconnect"):
            client.predict_action_chunk(make_batch(1))
        srv = PolicyServer(FakePolicy(), port=port)
        srv.start()
        # Within the interval the client does not even try: a dead server costs no time per call.
        started = time.monotonic()
        with pytest.raises(RemotePolicyError, match="retrying every"):
            client.predict_action_chunk(make_batch(1))
        assert time.monotonic() - started < 0.1
        time.sleep(0.35)
        assert client.predict_action_chunk(make_batch(1)).shape == (1, HORIZON, ACTION_DIM)
        assert client.reconnects == 1 and srv.requests_served == 1
    finally:
        client.close()
        srv.stop()

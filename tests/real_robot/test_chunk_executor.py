"""Chunk executor: timing alignment, temporal-ensembling maths, hold when dry, no blocking on inference."""

import math
import threading
import time

import numpy as np
import pytest

from vla.real_robot.chunk_executor import ChunkExecutor

RATE = 50.0
DT = 1.0 / RATE


def ramp(h: int, a: int, offset: float) -> np.ndarray:
    """Row k of every dimension is offset + k, so the row played is visible in the value."""
    return offset + np.repeat(np.arange(h, dtype=np.float64)[:, None], a, axis=1)


def test_single_chunk_rows_follow_the_clock_then_hold():
    ex = ChunkExecutor(RATE, action_dim=3)
    ex.submit_chunk(ramp(5, 3, 0.0), obs_timestamp=10.0)
    for k in range(5):
        np.testing.assert_allclose(ex.next_action(10.0 + k * DT + 0.2 * DT), [k] * 3)
    assert ex.next_action(10.0 + 5 * DT) is None  # buffer ran dry: the caller holds
    assert ex.num_buffered == 0


def test_rows_already_in_the_past_are_skipped():
    ex = ChunkExecutor(RATE, action_dim=2)
    ex.submit_chunk(ramp(10, 2, 0.0)[None], obs_timestamp=0.0)  # [1, H, A] is accepted
    # The chunk arrived 3 periods after its observation (inference latency).
    np.testing.assert_allclose(ex.next_action(3 * DT), [3, 3])


@pytest.mark.parametrize("decay", [0.0, 0.5, -0.5, 2.0])
def test_ensembling_weights_are_exponential_in_age(decay):
    ex = ChunkExecutor(RATE, action_dim=2, ensemble_decay=decay)
    a, b, c = ramp(8, 2, 0.0), ramp(8, 2, 100.0), ramp(8, 2, 1000.0)
    ex.submit_chunk(a, obs_timestamp=0.0)
    ex.submit_chunk(b, obs_timestamp=2 * DT)
    ex.submit_chunk(c, obs_timestamp=3 * DT)
    now = 4 * DT
    rows = np.stack([a[4], b[2], c[1]])  # oldest first
    w = np.exp(-decay * np.arange(3))
    expected = (w[:, None] * rows).sum(0) / w.sum()
    np.testing.assert_allclose(ex.next_action(now), expected, rtol=1e-12)


def test_ensembling_orders_by_observation_time_not_arrival():
    ex = ChunkExecutor(RATE, action_dim=1, ensemble_decay=1.0)
    newer, older = ramp(6, 1, 100.0), ramp(6, 1, 0.0)
    ex.submit_chunk(newer, obs_timestamp=1 * DT)  # arrives first
    ex.submit_chunk(older, obs_timestamp=0.0)
    w = np.exp(-1.0 * np.arange(2))
    expected = (w[0] * older[2] + w[1] * newer[1]) / w.sum()
    np.testing.assert_allclose(ex.next_action(2 * DT), expected)


def test_without_ensembling_the_newest_chunk_wins():
    ex = ChunkExecutor(RATE, action_dim=1, temporal_ensembling=False)
    ex.submit_chunk(ramp(6, 1, 0.0), 0.0)
    ex.submit_chunk(ramp(6, 1, 100.0), DT)
    np.testing.assert_allclose(ex.next_action(2 * DT), [101.0])


def test_the_last_chunk_keeps_playing_when_no_new_one_arrives():
    ex = ChunkExecutor(RATE, action_dim=1)
    ex.submit_chunk(ramp(4, 1, 0.0), 0.0)
    ex.submit_chunk(ramp(10, 1, 50.0), DT)
    # The first chunk has expired; the second one alone plays to its end.
    for k in range(5, 11):
        np.testing.assert_allclose(ex.next_action(k * DT), [50.0 + k - 1])
    assert ex.next_action(11 * DT) is None


@pytest.mark.parametrize("chunk, message", [
    (np.zeros((4, 3)), "expected"),
    (np.zeros((0, 2)), "expected"),
    (np.zeros(2), "expected"),
    (np.array([[0.0, np.nan]]), "NaN"),
])
def test_malformed_chunks_are_refused(chunk, message):
    ex = ChunkExecutor(RATE, action_dim=2)
    with pytest.raises(ValueError, match=message):
        ex.submit_chunk(chunk, 0.0)
    assert ex.num_buffered == 0


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        ChunkExecutor(0.0, 2)
    with pytest.raises(ValueError):
        ChunkExecutor(50.0, 0)
    with pytest.raises(ValueError):
        ChunkExecutor(50.0, 2, ensemble_decay=math.nan)


def test_control_loop_never_waits_on_a_slow_inference():
    """A fake inference thread takes 0.3 s per chunk; the control loop keeps its pace."""
    ex = ChunkExecutor(RATE, action_dim=7)
    start = time.monotonic()
    ex.submit_chunk(np.zeros((50, 7)), start)  # first chunk covers 1 s
    stop = threading.Event()
    submitted = []

    def inference():
        while not stop.is_set():
            obs_time = time.monotonic()
            time.sleep(0.3)  # the policy thinking
            ex.submit_chunk(np.full((50, 7), float(len(submitted) + 1)), obs_time)
            submitted.append(obs_time)

    worker = threading.Thread(target=inference, daemon=True)
    worker.start()
    worst, actions = 0.0, []
    try:
        deadline = start + 0.8
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            actions.append(ex.next_action(t0))
            worst = max(worst, time.monotonic() - t0)
            time.sleep(DT)
    finally:
        stop.set()
        worker.join(2.0)
    assert all(a is not None and np.all(np.isfinite(a)) for a in actions)
    assert len(submitted) >= 1 and any(np.any(a > 0) for a in actions)  # new chunks were picked up
    assert worst < 0.05, worst  # a blocked call would take ~0.3 s


def test_concurrent_submit_and_next_action_stay_consistent():
    ex = ChunkExecutor(1000.0, action_dim=7, ensemble_decay=0.1)
    stop = threading.Event()
    errors = []

    def producer():
        i = 0
        while not stop.is_set() and i < 3000:
            ex.submit_chunk(np.full((20, 7), float(i % 7)), time.monotonic())
            i += 1

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    try:
        for _ in range(3000):
            a = ex.next_action(time.monotonic())
            if a is not None and not (np.all(np.isfinite(a)) and np.all(a >= 0) and np.all(a <= 6)):
                errors.append(a)
    finally:
        stop.set()
        t.join(5.0)
    assert not errors
    assert ex.num_buffered <= 32  # bounded buffer


def test_chunk_planned_before_a_clear_is_refused():
    """An e-stop, disable or new instruction clears the buffer while the policy may still be
    computing; the chunk it then submits was planned for a state that no longer holds."""
    ex = ChunkExecutor(RATE, action_dim=3)
    before = ex.generation
    ex.clear()  # the event arrives during inference
    assert ex.submit_chunk(ramp(5, 3, 0.0), obs_timestamp=0.0, generation=before) is False
    assert ex.num_buffered == 0 and ex.next_action(0.0) is None
    assert ex.submit_chunk(ramp(5, 3, 0.0), obs_timestamp=0.0, generation=ex.generation) is True
    assert ex.num_buffered == 1
    assert ex.submit_chunk(ramp(5, 3, 0.0), obs_timestamp=0.0) is True  # no generation: always taken

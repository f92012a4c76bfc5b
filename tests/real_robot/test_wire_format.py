"""msgpack-numpy wire format: exact round trips, and refusal of anything that is not plain data."""

import msgpack
import numpy as np
import pytest

from vla.real_robot.wire_format import ARRAY_TAG, WireFormatError, pack, unpack


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.random.default_rng(0).integers(0, 255, size=(2, 8, 8, 3), dtype=np.uint8),
    np.array(3.5),
    np.zeros((0, 7)),
    np.array([True, False]),
    np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian input
    np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
])
def test_arrays_round_trip_exactly(array):
    out = unpack(pack({"x": array}))["x"]
    assert out.shape == array.shape and out.dtype.name == array.dtype.name
    np.testing.assert_array_equal(out, array)
    out[...] = 0 if out.size else out  # decoded arrays own writable memory


def test_nested_messages_round_trip():
    msg = {"type": "predict", "id": 3, "batch": {"state": np.ones(7, np.float32), "task": ["lift the cube"]},
           "score": np.float32(0.5)}
    out = unpack(pack(msg))
    assert out["type"] == "predict" and out["batch"]["task"] == ["lift the cube"] and out["score"] == 0.5


def test_object_arrays_and_unknown_types_are_not_encoded():
    with pytest.raises(WireFormatError, match="dtype"):
        pack({"x": np.array([object()], dtype=object)})
    with pytest.raises(WireFormatError, match="cannot encode"):
        pack({"x": {1, 2}})


def _raw(entry: dict) -> bytes:
    return msgpack.packb({"x": entry}, use_bin_type=True)


@pytest.mark.parametrize("entry, fragment", [
    ({ARRAY_TAG: True, "dtype": "object", "shape": [1], "data": b"\0" * 8}, "not allowed"),
    ({ARRAY_TAG: True, "dtype": "float32", "shape": [2], "data": b"\0" * 7}, "needs 8 bytes"),
    ({ARRAY_TAG: True, "dtype": "float32", "shape": [-1], "data": b""}, "shape"),
    ({ARRAY_TAG: True, "dtype": "float32", "shape": "2", "data": b"\0" * 8}, "shape"),
    ({ARRAY_TAG: True, "dtype": "float32", "shape": [2], "data": "text"}, "bytes"),
    ({ARRAY_TAG: True, "dtype": "float32", "shape": [2], "data": b"\0" * 8, "extra": 1}, "keys"),
])
def test_malformed_array_entries_are_refused(entry, fragment):
    with pytest.raises(WireFormatError, match=fragment):
        unpack(_raw(entry))


def test_garbage_and_oversize_input_are_refused():
    with pytest.raises(WireFormatError):
        unpack(b"\xc1\xff\x00garbage")
    with pytest.raises(WireFormatError, match="binary"):
        unpack("a text frame")
    with pytest.raises(WireFormatError, match="exceeds"):
        unpack(pack({"x": np.zeros(1000)}), max_bytes=100)

"""msgpack messages with numpy arrays as explicit {dtype, shape, bytes}; never pickle.

Decoding only rebuilds plain numeric arrays from a fixed dtype allow-list, so a
message can carry data but never code.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ARRAY_TAG = "__ndarray__"
# Plain numeric and bool dtypes only: object arrays could smuggle arbitrary values.
ALLOWED_DTYPES = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                            "float16", "float32", "float64"})
MAX_NDIM = 8


class WireFormatError(ValueError):
    """A message that is not a valid encoded payload."""


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in ALLOWED_DTYPES:
            raise WireFormatError(f"cannot send arrays of dtype {obj.dtype}")
        # astype, not ascontiguousarray: the latter turns 0-d arrays into 1-d ones.
        arr = obj.astype(obj.dtype.newbyteorder("<"), order="C", copy=False)
        return {ARRAY_TAG: True, "dtype": arr.dtype.name, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # a torch tensor, without importing torch
        return _encode_default(obj.detach().cpu().numpy())
    raise WireFormatError(f"cannot encode a {type(obj).__name__}")


def _decode_hook(obj: dict) -> Any:
    if obj.get(ARRAY_TAG) is not True:
        return obj
    if set(obj) != {ARRAY_TAG, "dtype", "shape", "data"}:
        raise WireFormatError(f"array entry has keys {sorted(obj)}")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise WireFormatError(f"array dtype {dtype!r} is not allowed")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise WireFormatError(f"array shape {shape!r} is not a list of non-negative ints")
    if not isinstance(data, bytes):
        raise WireFormatError("array data is not bytes")
    np_dtype = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
    if len(data) != expected:
        raise WireFormatError(f"array of shape {shape} and dtype {dtype} needs {expected} bytes, got {len(data)}")
    # Copy so the array owns writable memory (frombuffer views are read-only).
    return np.frombuffer(data, dtype=np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))


def pack(message: Any) -> bytes:
    """Encode a message (dicts, lists, str, numbers, numpy arrays)."""
    try:
        return msgpack.packb(message, default=_encode_default, use_bin_type=True)
    except WireFormatError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireFormatError(f"cannot encode message: {exc}") from exc


def unpack(data: bytes, max_bytes: int = 64 << 20) -> Any:
    """Decode bytes from pack; anything else raises WireFormatError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"expected a binary message, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireFormatError(f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        return msgpack.unpackb(bytes(data), raw=False, object_hook=_decode_hook, strict_map_key=True)
    except WireFormatError:
        raise
    except Exception as exc:  # msgpack raises several types for corrupt input
        raise WireFormatError(f"not a valid msgpack message: {exc}") from exc

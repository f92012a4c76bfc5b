"""Choose between a fused Triton kernel and its pure-torch reference.

Rules (the same for every op):
- ``VLA_KERNELS=auto`` (default): Triton when triton is installed and the
  tensors are on a CUDA device; the torch reference otherwise (CPU tensors).
- ``VLA_KERNELS=triton``: always try Triton. CPU tensors then only work under
  the Triton interpreter (``TRITON_INTERPRET=1`` set before ``vla.kernels`` is
  imported), which is how the tests run the kernels without a GPU.
- ``VLA_KERNELS=torch``: always the reference.
- ``VLA_KERNELS_DISABLE=op1,op2``: those ops always run the reference (e.g. one
  kernel under suspicion); ops in :data:`REFERENCE_ON_CUDA` do so in auto mode.
- A Triton kernel that fails to compile or launch (forward or backward) falls
  back to the reference with one :class:`KernelFallbackWarning` per op; that
  op then stays on the reference for the rest of the process.
- Without triton installed everything runs the reference.

Inputs are validated by each op's public function before dispatch, so an
exception inside a kernel launcher is a kernel failure, never a user error.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

try:  # triton is an optional extra (`pip install vla-rl[kernels]`)
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # ImportError, or a broken install: both mean "no Triton"
    triton = None
    tl = None
    HAS_TRITON = False

ENV_VAR = "VLA_KERNELS"
DISABLE_VAR = "VLA_KERNELS_DISABLE"
MODES = ("auto", "triton", "torch")

# Ops whose fused kernel measured slower than the torch path on a GPU (BENCHMARKS.md):
# auto mode keeps them on the reference. Empty until GPU figures say otherwise.
REFERENCE_ON_CUDA: set[str] = set()

_failed: set[str] = set()
_warned: set[str] = set()


class KernelFallbackWarning(RuntimeWarning):
    """A Triton kernel could not run; the torch reference was used instead."""


def mode() -> str:
    """The backend mode from ``VLA_KERNELS`` (read on every call, so tests can flip it)."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not one of {', '.join(MODES)}")
    return value


def reset() -> None:
    """Forget past kernel failures and warnings (tests; after fixing an install)."""
    _failed.clear()
    _warned.clear()


def failed_ops() -> frozenset[str]:
    """Ops that fell back to the reference after a kernel failure in this process."""
    return frozenset(_failed)


def _warn_once(op: str, message: str) -> None:
    if op in _warned:
        return
    _warned.add(op)
    warnings.warn(f"vla.kernels.{op}: {message}; using the torch reference", KernelFallbackWarning, stacklevel=4)


def use_triton(op: str, tensors: Sequence[torch.Tensor | None]) -> bool:
    """Whether ``op`` should run its Triton kernel on these tensors."""
    selected = mode()
    disabled = {name.strip() for name in os.environ.get(DISABLE_VAR, "").split(",")}
    if selected == "torch" or op in _failed or op in disabled:
        return False
    if not HAS_TRITON:
        if selected == "triton":
            _warn_once(op, f"{ENV_VAR}=triton but triton is not installed")
        return False
    if selected == "triton":
        return True
    return op not in REFERENCE_ON_CUDA and all(t.is_cuda for t in tensors if t is not None)


def record_failure(op: str, err: BaseException) -> None:
    """Mark ``op`` as broken and warn once."""
    _failed.add(op)
    _warn_once(op, f"Triton kernel failed ({type(err).__name__}: {err})")


def call(op: str, triton_fn: Callable[..., Any], reference_fn: Callable[..., Any],
         tensors: Sequence[torch.Tensor | None], *args: Any, **kwargs: Any) -> Any:
    """Run ``triton_fn(*args, **kwargs)`` if the rules allow, else (or on failure) the reference.

    Empty tensors always take the reference (there is nothing to launch).
    """
    if use_triton(op, tensors) and all(t is None or t.numel() > 0 for t in tensors):
        try:
            return triton_fn(*args, **kwargs)
        except Exception as err:  # compile or launch failure: never crash the caller
            record_failure(op, err)
    return reference_fn(*args, **kwargs)


def reference_grads(reference_fn: Callable[..., Any], inputs: Sequence[Any],
                    grad_outputs: Sequence[torch.Tensor | None],
                    needs_input_grad: Sequence[bool]) -> tuple[torch.Tensor | None, ...]:
    """Gradients of ``reference_fn(*inputs)`` by torch autograd, for a backward kernel that failed.

    ``reference_fn`` must return a tensor or a tuple of tensors aligned with ``grad_outputs``.
    """
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(need) if isinstance(x, torch.Tensor) and need else
                  (x.detach() if isinstance(x, torch.Tensor) else x)
                  for x, need in zip(inputs, needs_input_grad)]
        outs = reference_fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grad_outputs)
                 if g is not None and isinstance(o, torch.Tensor) and o.requires_grad]
        wanted = [x for x, need in zip(leaves, needs_input_grad) if need]
        if not pairs or not wanted:
            return tuple(None for _ in inputs)
        grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
    return tuple(next(grads) if need else None for need in needs_input_grad)


def backward(op: str, kernel_fn: Callable[[], tuple[torch.Tensor | None, ...]],
             fallback_fn: Callable[[], tuple[torch.Tensor | None, ...]]) -> tuple[torch.Tensor | None, ...]:
    """Run a backward kernel; if it fails, warn once and compute the gradients with torch instead.

    ``fallback_fn`` usually wraps :func:`reference_grads` around the op's reference.
    """
    try:
        return kernel_fn()
    except Exception as err:
        record_failure(op, err)
        return fallback_fn()


# ----------------------------------------------------------------- launch helpers
def compute_dtype(t: torch.Tensor):
    """Triton arithmetic type: float64 for float64 tensors, float32 otherwise (fp16/bf16 upcast)."""
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def torch_compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The torch reference's arithmetic type, matching :func:`compute_dtype`."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def interpreting() -> bool:
    """True when the Triton interpreter runs the kernels (CPU tests)."""
    return HAS_TRITON and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def row_blocks(n_rows: int, n_cols: int, tile: int | None = None) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_C) for a row-wise kernel over an [n_rows, n_cols] tensor.

    Columns are processed in chunks of at most 1024 (rows of any length work by
    looping); several rows share a program so a tile holds about ``tile`` elements.
    The interpreter runs one program at a time, so it gets much larger tiles.
    """
    tile = tile or (1 << 16 if interpreting() else 2048)
    block_c = min(triton.next_power_of_2(max(n_cols, 1)), 1024)
    block_r = max(1, min(tile // block_c, triton.next_power_of_2(max(n_rows, 1))))
    return block_r, block_c


def flat_block(numel: int) -> int:
    """Block size of a 1-D elementwise kernel."""
    return min(1 << 16 if interpreting() else 1024, max(16, triton.next_power_of_2(max(numel, 1))))


def device_guard(t: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (fp16, bf16, fp32, fp64), got {t.dtype}")


def check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``t`` must match ``ref`` in shape, dtype and device."""
    check_float(name, t)
    if t.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)} like {ref_name}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, expected {ref.dtype} like {ref_name}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device}, expected {ref.device} like {ref_name}")


def per_batch(name: str, value: float | torch.Tensor, batch: int, like: torch.Tensor,
              dtype: torch.dtype) -> torch.Tensor:
    """A float or a [B] (or 0-dim, or [B, 1, ...]) tensor as a contiguous [B] tensor of ``dtype``."""
    if isinstance(value, torch.Tensor):
        if value.device != like.device:
            raise ValueError(f"{name} is on {value.device}, expected {like.device}")
        if value.numel() == 1:
            return value.reshape(1).to(dtype).expand(batch).contiguous()
        if value.numel() != batch or (value.dim() > 0 and value.shape[0] != batch):
            raise ValueError(f"{name} must be a float or a tensor with {batch} entries (one per batch row), "
                             f"got shape {tuple(value.shape)}")
        return value.reshape(batch).to(dtype).contiguous()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((batch,), float(value), dtype=dtype, device=like.device)
    raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")


def row_mask(name: str, mask: torch.Tensor | None, row_shape: torch.Size | tuple[int, ...],
             device: torch.device) -> torch.Tensor | None:
    """A bool mask of shape ``row_shape`` or [B] (broadcast over the rest), as a flat [N] bool tensor."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = keep), got "
                        f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device}, expected {device}")
    row_shape = tuple(row_shape)
    if tuple(mask.shape) == row_shape:
        return mask.reshape(-1)
    if len(row_shape) >= 1 and tuple(mask.shape) == row_shape[:1]:
        return mask.reshape((-1,) + (1,) * (len(row_shape) - 1)).expand(row_shape).reshape(-1)
    raise ValueError(f"{name} must have shape {row_shape} or ({row_shape[0] if row_shape else 1},), "
                     f"got {tuple(mask.shape)}")


def needs_grad(*tensors: torch.Tensor | float | None) -> bool:
    """Whether autograd will track an op over these inputs."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)

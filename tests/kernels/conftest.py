"""Kernel tests: Triton kernels run under the interpreter when there is no GPU.

Triton decides at decoration time whether a kernel is interpreted, for our
kernels and for triton's own helpers (tl.sum, ...), so TRITON_INTERPRET must be
set before triton is first imported. This conftest sets it; if another test
folder imported triton earlier (through vla.kernels), set it in the root
tests/conftest.py instead (or run `TRITON_INTERPRET=1 pytest`). On a CUDA
machine the same tests compile real kernels on CUDA tensors.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def _interpreter_broken() -> str | None:
    """Why the Triton interpreter cannot run here, or None when it can."""
    if torch.cuda.is_available() or "triton" not in sys.modules:
        return None
    from triton.language import standard
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(standard.sum, InterpretedFunction):
        return None
    return ("triton was imported before TRITON_INTERPRET=1 was set, so its kernels cannot run on CPU: "
            "set it in tests/conftest.py (when CUDA is unavailable) or run `TRITON_INTERPRET=1 pytest`")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (bf16 and real Triton compilation)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> torch.device:
    """Where the Triton path can run: CUDA if present, else CPU under the interpreter."""
    problem = _interpreter_broken()
    if problem:
        pytest.fail(problem)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _clean_dispatch(monkeypatch):
    """Every test starts with VLA_KERNELS(_DISABLE) unset and no remembered kernel failure."""
    from vla.kernels import dispatch

    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.delenv(dispatch.DISABLE_VAR, raising=False)
    dispatch.reset()
    yield
    dispatch.reset()

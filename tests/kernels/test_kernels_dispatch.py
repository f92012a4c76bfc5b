"""Dispatch: CPU default, VLA_KERNELS forcing, one-warning fallback (forward and backward), no triton."""

import os
import subprocess
import sys
import warnings

import pytest
import torch
from kernel_checks import close, graph_leaves, op_cases

from vla.kernels import KernelFallbackWarning, dispatch

OPS = sorted(op_cases("cpu"))


def _fallback_warnings(record):
    return [w for w in record if issubclass(w.category, KernelFallbackWarning)]


def _spy(monkeypatch, module, attr, passthrough):
    calls = []
    original = getattr(module, attr)

    def spy(*args, **kwargs):
        calls.append(1)
        if passthrough:
            return original(*args, **kwargs)
        raise RuntimeError("the Triton path must not run here")

    monkeypatch.setattr(module, attr, spy)
    return calls


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("env", [None, "auto", "torch"])
def test_cpu_tensors_run_the_reference(op, env, monkeypatch):
    if env is not None:
        monkeypatch.setenv("VLA_KERNELS", env)
    module, attr, call = op_cases("cpu")[op]
    calls = _spy(monkeypatch, module, attr, passthrough=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = call("public")
    assert calls == [] and _fallback_warnings(record) == []
    for a, b in zip(got, call("reference")):
        assert torch.equal(a, b)


@pytest.mark.parametrize("op", OPS)
def test_forced_triton_runs_the_kernel(op, monkeypatch, device):
    monkeypatch.setenv("VLA_KERNELS", "triton")
    module, attr, call = op_cases(device)[op]
    calls = _spy(monkeypatch, module, attr, passthrough=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = call("public")
    assert calls == [1] and _fallback_warnings(record) == []
    for a, b in zip(got, call("reference")):
        close(a, b, atol=1e-4, rtol=1e-5)


class _BrokenKernel:
    """Stands in for a @triton.jit kernel that fails to compile."""

    def __getitem__(self, grid):
        raise RuntimeError("simulated Triton compile error")


FORWARD_KERNELS = {
    "flow_sde_step": "_sde_step_kernel", "flow_sde_log_prob": "_sde_log_prob_fwd",
    "flow_gaussian_log_prob": "_gauss_lp_fwd", "flow_interpolate": "_interp_kernel",
    "flow_matching_loss": "_fm_loss_fwd", "ada_rms_norm": "_norm_fwd", "gated_residual": "_residual_fwd",
    "gated_residual_ada_rms_norm": "_norm_fwd", "clipped_policy_loss": "_ppo_fwd", "vib_sample": "_vib_fwd",
    "euler_projection": "_euler_proj_kernel",
}


@pytest.mark.parametrize("op", OPS)
def test_failing_kernel_falls_back_with_one_warning(op, monkeypatch):
    monkeypatch.setenv("VLA_KERNELS", "triton")
    module, _, call = op_cases("cpu")[op]
    monkeypatch.setattr(module, FORWARD_KERNELS[op], _BrokenKernel())
    with pytest.warns(KernelFallbackWarning, match="simulated Triton compile error") as record:
        first = call("public")
        second = call("public")
    assert len(_fallback_warnings(record)) == 1
    assert op in dispatch.failed_ops()
    for a, b, c in zip(first, second, call("reference")):
        assert torch.equal(a, c) and torch.equal(b, c)


BACKWARD = {  # op -> backward kernel
    "flow_sde_log_prob": "_sde_log_prob_bwd", "flow_gaussian_log_prob": "_gauss_lp_bwd",
    "flow_matching_loss": "_fm_loss_bwd", "ada_rms_norm": "_norm_bwd", "gated_residual": "_residual_bwd",
    "gated_residual_ada_rms_norm": "_norm_bwd", "clipped_policy_loss": "_ppo_bwd", "vib_sample": "_vib_bwd",
}


@pytest.mark.parametrize("op", sorted(BACKWARD))
def test_failing_backward_kernel_falls_back_to_reference_grads(op, monkeypatch, device):
    monkeypatch.setenv("VLA_KERNELS", "triton")

    def run(variant):
        cases = op_cases(device, torch.float64, requires_grad=True)
        module, _, call = cases[op]
        outs = [o for o in call(variant) if o.requires_grad]
        leaves = graph_leaves(outs)
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        return module, [t.grad for t in leaves]

    module, want = run("reference")
    monkeypatch.setattr(module, BACKWARD[op], _BrokenKernel())
    with pytest.warns(KernelFallbackWarning) as record:
        _, got = run("triton")
    assert len(_fallback_warnings(record)) == 1
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        close(a, b, atol=1e-10, rtol=1e-9)


def test_disable_list_keeps_an_op_on_the_reference(monkeypatch, device):
    monkeypatch.setenv("VLA_KERNELS", "triton")
    monkeypatch.setenv("VLA_KERNELS_DISABLE", "ada_rms_norm, vib_sample")
    cases = op_cases(device)
    for op, expected_calls in (("vib_sample", []), ("flow_matching_loss", [1])):
        module, attr, call = cases[op]
        calls = _spy(monkeypatch, module, attr, passthrough=True)
        call("public")
        assert calls == expected_calls, op


def test_invalid_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("VLA_KERNELS", "cuda")
    with pytest.raises(ValueError, match="VLA_KERNELS='cuda' is not one of auto, triton, torch"):
        op_cases("cpu")["vib_sample"][2]("public")


def test_empty_tensors_use_the_reference(monkeypatch):
    monkeypatch.setenv("VLA_KERNELS", "triton")
    from vla.kernels import vib

    calls = _spy(monkeypatch, vib, "_vib_triton", passthrough=False)
    z, kl = vib.vib_sample(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 4))
    assert z.shape == (0, 4) and kl.shape == (0,) and calls == []


NO_TRITON = r"""
import os, sys, warnings
sys.modules["triton"] = None  # any `import triton` now raises ImportError
import torch
import vla.kernels as K
assert not K.HAS_TRITON
x = torch.randn(2, 3, 4)
K.flow_sde_step(x, x, 1.0, 0.1, 0.5, x)
K.flow_sde_log_prob(x, x, x, 1.0, 0.1, 0.5)
K.flow_gaussian_log_prob(x, x, torch.ones(2, 3, 1))
K.flow_matching_loss(x, x, x)
K.flow_interpolate(x, x, 0.5)
K.ada_rms_norm(x, None, torch.zeros(2, 4), torch.zeros(2, 4))
K.gated_residual_ada_rms_norm(x, x, torch.ones(2, 4))
K.gated_residual(x, x, torch.ones(2, 4))
K.clipped_policy_loss(x, x, x)
K.vib_sample(x, x, x)
K.euler_projection(x, torch.ones(4, 4), None, x, 0.1)
os.environ["VLA_KERNELS"] = "triton"
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    K.vib_sample(x, x, x)
    K.vib_sample(x, x, x)
msgs = [str(i.message) for i in w if issubclass(i.category, K.KernelFallbackWarning)]
assert len(msgs) == 1 and "triton is not installed" in msgs[0], msgs
print("no-triton ok")
"""


def test_import_and_run_without_triton():
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "VLA_KERNELS")}
    proc = subprocess.run([sys.executable, "-c", NO_TRITON], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no-triton ok" in proc.stdout

"""Shared helpers of the kernel tests: tolerances, comparisons, random inputs."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

DTYPES = [torch.float32, torch.float64]
FP64_TOL = dict(atol=1e-10, rtol=1e-9)


def tol(dtype: torch.dtype, atol: float, rtol: float) -> dict:
    """The issue's fp32 tolerance, or a tight one for float64."""
    return FP64_TOL if dtype == torch.float64 else dict(atol=atol, rtol=rtol)


def close(actual, expected, atol: float, rtol: float, what: str = "") -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def leaves(*tensors):
    """Independent requires-grad copies (None passes through)."""
    return [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]


def grads(tensors):
    return [t.grad if t is not None else None for t in tensors]


def graph_leaves(outputs):
    """The leaf tensors an autograd graph starts from, in a stable order."""
    seen, found, stack = set(), [], [o.grad_fn for o in outputs]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            found.append(fn.variable)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return sorted(found, key=lambda t: (tuple(t.shape), t.double().sum().item()))


def op_cases(device, dtype=torch.float32, requires_grad=False):
    """One small call of every public op, as {name: (module, triton_wrapper_attr, call)}.

    ``call(variant)`` runs the op's "public", "triton" or "reference" function on
    fixed inputs and returns its outputs as a tuple of tensors.
    """
    from vla.kernels import adaptive_norm, flow_matching, flow_sde, gaussian_log_prob, output_projection, \
        policy_loss, vib

    g = torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0, grad=True):
        t = (scale * torch.randn(*shape, generator=g)).to(device=device, dtype=dtype)
        return t.requires_grad_(requires_grad and grad)

    b, h, a, d = 2, 3, 5, 12
    x, v, xi = r(b, h, a), r(b, h, a), r(b, h, a)
    std = (torch.rand(b, h, 1, generator=g) + 0.5).to(device=device, dtype=dtype).requires_grad_(requires_grad)
    t = torch.tensor([1.0, 0.5], device=device, dtype=dtype)
    mask = torch.tensor([[True, False, True], [True, True, False]], device=device)
    tokens, res, scale, shift, gate, w = r(b, 7, d), r(b, 7, d), r(b, d, scale=0.3), r(b, d), r(b, d), r(d)
    # Old log-probs and advantages are rollout data: never differentiated.
    lp_new, lp_old, adv = r(4, 6, scale=0.3), r(4, 6, scale=0.3, grad=False), r(4, 6, grad=False)
    hid, proj_w, proj_b = r(b, h, 16), r(a, 16, scale=0.25), r(a)
    mods = dict(flow_sde=flow_sde, gaussian_log_prob=gaussian_log_prob, flow_matching=flow_matching,
                adaptive_norm=adaptive_norm, policy_loss=policy_loss, vib=vib, output_projection=output_projection)

    def fn(module, name, variant):
        full = name if variant == "public" else f"{name}_{variant}"
        return getattr(mods[module], full)

    def as_tuple(out):
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):  # (loss, stats)
            return (out[0],) + tuple(out[1][k] for k in sorted(out[1]))
        return out if isinstance(out, tuple) else (out,)

    specs = {
        "flow_sde_step": ("flow_sde", "_step_triton", lambda f: f(x, v, t, 0.1, 0.5, xi, mask)),
        "flow_sde_log_prob": ("flow_sde", "_log_prob_triton", lambda f: f(x, v, xi, t, 0.1, 0.5, mask)),
        "flow_gaussian_log_prob": ("gaussian_log_prob", "_log_prob_triton", lambda f: f(xi, x, std, mask)),
        "flow_interpolate": ("flow_matching", "_interp_triton", lambda f: f(x, xi, t)),
        "flow_matching_loss": ("flow_matching", "_loss_triton", lambda f: f(v, x, xi, mask)),
        "ada_rms_norm": ("adaptive_norm", "_norm_triton", lambda f: f(tokens, w, scale, shift)),
        "gated_residual": ("adaptive_norm", "_residual_triton", lambda f: f(res, tokens, gate)),
        "gated_residual_ada_rms_norm": ("adaptive_norm", "_fused_triton",
                                        lambda f: f(res, tokens, gate, w, scale, shift)),
        "clipped_policy_loss": ("policy_loss", "_loss_triton",
                                lambda f: f(lp_new, lp_old, adv, dual_clip=3.0, kl_coef=0.1, logp_ref=adv)),
        "vib_sample": ("vib", "_vib_triton", lambda f: f(x, v, xi)),
        "euler_projection": ("output_projection", "_euler_triton", lambda f: f(hid, proj_w, proj_b, x, t)),
    }
    return {name: (mods[module], attr,
                   (lambda variant, name=name, module=module, call=call: as_tuple(call(fn(module, name, variant)))))
            for name, (module, attr, call) in specs.items()}

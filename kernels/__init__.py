"""Fused Triton kernels for the hot paths, each with a pure-torch reference.

Every public op dispatches (see :mod:`vla.kernels.dispatch`): Triton on CUDA
tensors, the torch reference on CPU, ``VLA_KERNELS=auto|triton|torch`` to
force either, and a kernel that fails falls back to the reference with one
warning. Importing this package never needs triton.

Ops (shapes and exact semantics in each docstring):
- :func:`flow_sde_step`, :func:`flow_sde_log_prob`: Flow-SDE denoising step and
  the log-prob recompute (docs/ALGORITHMS.md section 1).
- :func:`flow_gaussian_log_prob`: diagonal Gaussian log-prob of a stored step.
- :func:`flow_interpolate`, :func:`flow_matching_loss`: SFT interpolant and masked MSE.
- :func:`ada_rms_norm`, :func:`gated_residual`, :func:`gated_residual_ada_rms_norm`:
  adaptive RMSNorm and the gated residual of the action expert.
- :func:`clipped_policy_loss`: PPO / GRPO clipped loss with dual clip and k3 KL.
- :func:`vib_sample`: VIB reparameterisation and KL to N(0, I).
- :func:`euler_projection`: output projection with the Euler step fused (inference).
"""

if __name__ == "kernels":
    # This folder is the package vla.kernels. It is importable as a top-level `kernels` only because
    # the repository root is on sys.path (pytest's rootdir insertion, `python -c` in the root), and
    # that name belongs to Hugging Face's `kernels` package, which transformers imports. Hand the
    # name to whatever a top-level `kernels` would be without the repository root on the path.
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os
    import sys as _sys

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _path = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _root]
    _spec = _machinery.PathFinder.find_spec("kernels", _path)
    if _spec is None:
        # Nothing else is called `kernels`. Be what this folder would be without its __init__.py: an
        # empty namespace package (no __file__, no __version__), which transformers reads as "not
        # installed". Raising instead would fail transformers' availability probe, which imports us.
        import types as _types

        _module = _types.ModuleType("kernels")
        _module.__path__ = []
    else:
        _module = _util.module_from_spec(_spec)
    # The import system returns whatever sys.modules holds under the name once this file ends.
    _sys.modules["kernels"] = _module
    if _spec is not None:
        _spec.loader.exec_module(_module)
else:
    from .adaptive_norm import ada_rms_norm, gated_residual, gated_residual_ada_rms_norm
    from .dispatch import HAS_TRITON, KernelFallbackWarning
    from .output_projection import euler_projection
    from .flow_matching import flow_interpolate, flow_matching_loss
    from .flow_sde import flow_sde_log_prob, flow_sde_step
    from .gaussian_log_prob import flow_gaussian_log_prob
    from .policy_loss import clipped_policy_loss
    from .vib import vib_sample

    __all__ = [
        "HAS_TRITON",
        "KernelFallbackWarning",
        "ada_rms_norm",
        "clipped_policy_loss",
        "euler_projection",
        "flow_gaussian_log_prob",
        "flow_interpolate",
        "flow_matching_loss",
        "flow_sde_log_prob",
        "flow_sde_step",
        "gated_residual",
        "gated_residual_ada_rms_norm",
        "vib_sample",
    ]

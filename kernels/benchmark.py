"""Benchmark every fused kernel against torch eager and torch.compile.

    python benchmarks/fused_kernels.py [--sizes tiny,pi0] [--ops a,b] [--dtype float32] [--no-compile]
    vla bench kernels ...            (the CLI calls :func:`main`)

For each op, size and pass (forward, forward+backward): median wall time per
call, peak CUDA memory above the inputs (CUDA only), and the memory saved for
backward beyond the inputs (any device). "eager" and "compile" run the torch
reference (the compile column is ``torch.compile`` of it); "triton" runs the
fused kernel and is measured only on a CUDA device. Prints a markdown table
and writes it to benchmarks/results/kernels_<device>.md (``--out`` to change).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import adaptive_norm, dispatch, flow_matching, flow_sde, gaussian_log_prob, output_projection, policy_loss, vib

# Sizes: "tiny" follows the tiny policy preset (chunk 16, 7 action dims, expert width 128, 17
# suffix tokens); "pi0" pi0's (chunk 50, 32 action dims, width 1024; 816 tokens per sample for
# the norm; 256 rollouts x 50 decision steps for the policy loss; a 32-d VIB latent, batch 256).
SIZES = {
    "tiny": dict(b=8, h=16, a=7, t=17, d=128, rollouts=64, steps=16, dz=16, vib_batch=8, k=128),
    "pi0": dict(b=32, h=50, a=32, t=816, d=1024, rollouts=256, steps=50, dz=32, vib_batch=256, k=1024),
}


@dataclass
class Case:
    """One op at one size: ``make(requires_grad)`` -> (args, kwargs); fns take them."""

    op: str
    shape: str
    make: Callable[[bool], tuple[tuple, dict]]
    eager: Callable
    triton: Callable
    differentiable: bool


def _cases(size: str, device: torch.device, dtype: torch.dtype) -> list[Case]:
    s = SIZES[size]
    b, h, a = s["b"], s["h"], s["a"]

    def rnd(*shape, scale=1.0, grad=False, dt=dtype):
        return (scale * torch.randn(*shape, device=device, dtype=dt)).requires_grad_(grad)

    t = torch.linspace(1.0, 0.1, b, device=device)
    mask = torch.rand(b, h, device=device) > 0.2

    def sde(rg):
        return (rnd(b, h, a), rnd(b, h, a, grad=rg), t, 0.1, 0.5, rnd(b, h, a)), {"stochastic_mask": mask}

    def sde_lp(rg):
        return (rnd(b, h, a), rnd(b, h, a, grad=rg), rnd(b, h, a), t, 0.1, 0.5), {"stochastic_mask": mask}

    def gauss(rg):
        std = (torch.rand(b, h, 1, device=device, dtype=dtype) + 0.5).requires_grad_(rg)
        return (rnd(b, h, a), rnd(b, h, a, grad=rg), std), {"mask": mask}

    def fm_loss(rg):
        return (rnd(b, h, a, grad=rg), rnd(b, h, a), rnd(b, h, a)), {"mask": mask}

    def interp(rg):
        return (rnd(b, h, a), rnd(b, h, a), torch.rand(b, device=device)), {}

    nb, nt, d = s["b"], s["t"], s["d"]

    def norm(rg):
        return (rnd(nb, nt, d, grad=rg), None, rnd(nb, d, scale=0.1, grad=rg), rnd(nb, d, grad=rg)), {}

    def fused(rg):
        return (rnd(nb, nt, d, grad=rg), rnd(nb, nt, d, grad=rg), rnd(nb, d, grad=rg), None,
                rnd(nb, d, scale=0.1, grad=rg), rnd(nb, d, grad=rg)), {}

    def residual(rg):
        return (rnd(nb, nt, d, grad=rg), rnd(nb, nt, d, grad=rg), rnd(nb, d, grad=rg)), {}

    r, st = s["rollouts"], s["steps"]

    def ppo(rg):
        new = rnd(r, st, scale=0.3, grad=rg, dt=torch.float32)
        old = (new.detach() + 0.1 * torch.randn_like(new))
        valid = torch.rand(r, st, device=device) > 0.1
        return (new, old, rnd(r, 1, dt=torch.float32)), {"dual_clip": 3.0, "mask": valid}

    def vib_case(rg):
        return tuple(rnd(s["vib_batch"], s["dz"], grad=rg and i < 2) for i in range(3)), {}

    k = s["k"]

    def proj(rg):
        return (rnd(b, h, k), rnd(a, k, scale=k ** -0.5), rnd(a), rnd(b, h, a), t), {}

    act = f"[{b}, {h}, {a}]"
    tok = f"[{nb}, {nt}, {d}]"
    return [
        Case("flow_sde_step", act, sde, flow_sde.flow_sde_step_reference, flow_sde.flow_sde_step_triton, False),
        Case("flow_sde_log_prob", act, sde_lp, flow_sde.flow_sde_log_prob_reference,
             flow_sde.flow_sde_log_prob_triton, True),
        Case("flow_gaussian_log_prob", act, gauss, gaussian_log_prob.flow_gaussian_log_prob_reference,
             gaussian_log_prob.flow_gaussian_log_prob_triton, True),
        Case("flow_interpolate", act, interp, flow_matching.flow_interpolate_reference,
             flow_matching.flow_interpolate_triton, False),
        Case("flow_matching_loss", act, fm_loss, flow_matching.flow_matching_loss_reference,
             flow_matching.flow_matching_loss_triton, True),
        Case("ada_rms_norm", tok, norm, adaptive_norm.ada_rms_norm_reference, adaptive_norm.ada_rms_norm_triton, True),
        Case("gated_residual", tok, residual, adaptive_norm.gated_residual_reference,
             adaptive_norm.gated_residual_triton, True),
        Case("gated_residual_ada_rms_norm", tok, fused, adaptive_norm.gated_residual_ada_rms_norm_reference,
             adaptive_norm.gated_residual_ada_rms_norm_triton, True),
        Case("clipped_policy_loss", f"[{r}, {st}]", ppo, policy_loss.clipped_policy_loss_reference,
             policy_loss.clipped_policy_loss_triton, True),
        Case("vib_sample", f"[{s['vib_batch']}, {s['dz']}]", vib_case, vib.vib_sample_reference,
             vib.vib_sample_triton, True),
        Case("euler_projection", f"h [{b}, {h}, {k}] -> [{b}, {h}, {a}]", proj,
             output_projection.euler_projection_reference, output_projection.euler_projection_triton, False),
    ]


# ------------------------------------------------------------------ measuring
def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return []
    return [t for o in out for t in _tensors(o)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(fn: Callable, args: tuple, kwargs: dict, backward: bool) -> Callable[[], None]:
    leaves = [x for x in args if isinstance(x, torch.Tensor) and x.requires_grad]
    if not backward:
        def run():
            with torch.no_grad():
                fn(*args, **kwargs)
        return run
    outs = [o for o in _tensors(fn(*args, **kwargs)) if o.requires_grad]
    grads = [torch.ones_like(o) for o in outs]

    def run():
        for x in leaves:
            x.grad = None
        outs = [o for o in _tensors(fn(*args, **kwargs)) if o.requires_grad]
        torch.autograd.backward(outs, grads)
    return run


def _time_ms(run: Callable[[], None], device: torch.device, min_time: float) -> float:
    run()
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    once = max(time.perf_counter() - start, 1e-6)
    reps = int(min(max(min_time / once, 1), 1000))
    samples = []
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            run()
        _sync(device)
        samples.append((time.perf_counter() - start) / reps)
    return statistics.median(samples) * 1e3


def _peak_mib(run: Callable[[], None], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20


def _saved_mib(fn: Callable, args: tuple, kwargs: dict) -> float:
    """Bytes autograd keeps for backward beyond the inputs themselves (activation memory)."""
    inputs = {x.untyped_storage().data_ptr() for x in args if isinstance(x, torch.Tensor)}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in inputs:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args, **kwargs)
    return sum(saved.values()) / 2 ** 20


@dataclass
class Row:
    op: str
    size: str
    shape: str
    mode: str
    ms: dict[str, float | str]
    peak: dict[str, float | None]
    saved: dict[str, float | None]


def _measure(case: Case, size: str, device: torch.device, use_compile: bool, use_triton: bool,
             min_time: float, log: Callable[[str], None]) -> list[Row]:
    rows = []
    modes = ["fwd", "fwd+bwd"] if case.differentiable else ["fwd"]
    for mode in modes:
        backward = mode == "fwd+bwd"
        fns: dict[str, Callable | None] = {"eager": case.eager, "compile": None, "triton": None}
        if use_compile:
            torch._dynamo.reset()
            fns["compile"] = torch.compile(case.eager, dynamic=False)
        if use_triton:
            fns["triton"] = case.triton
        row = Row(case.op, size, case.shape, mode, {}, {}, {})
        for name, fn in fns.items():
            if fn is None:
                row.ms[name], row.peak[name], row.saved[name] = "-", None, None
                continue
            log(f"  {case.op} {size} {mode} {name}")
            try:
                args, kwargs = case.make(backward)
                run = _runner(fn, args, kwargs, backward)
                row.ms[name] = _time_ms(run, device, min_time)
                row.peak[name] = _peak_mib(run, device)
                row.saved[name] = _saved_mib(fn, args, kwargs) if backward and name != "compile" else None
            except Exception as err:  # a backend that cannot run this case is reported, not fatal
                log(f"    {name} failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                row.ms[name], row.peak[name], row.saved[name] = "error", None, None
        rows.append(row)
    return rows


# ------------------------------------------------------------------ report
def _fmt(v: float | str | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}g}" if v < 1000 else f"{v:.0f}"


def _ratio(num, den) -> str:
    if isinstance(num, float) and isinstance(den, float) and den > 0:
        return f"{num / den:.2f}x"
    return "-"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU ({model}, {os.cpu_count()} cores)"


def _slug(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def render(rows: list[Row], device: torch.device, dtype: torch.dtype, command: str, triton_note: str,
           threads: int) -> str:
    lines = [
        "# Kernel benchmark",
        "",
        f"- device: {device_name(device)}" + ("" if device.type == "cuda" else f", torch threads {threads}"),
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}`",
        f"- torch {torch.__version__}, triton {dispatch.triton.__version__ if dispatch.HAS_TRITON else 'not installed'}"
        f", activations {str(dtype).replace('torch.', '')} (log-probs and the policy loss in float32)",
        f"- {triton_note}",
        "- times: median ms per call; speedup = eager or compile time / triton time (> 1 is faster)",
        "- peak: CUDA memory above the inputs during one call (MiB); saved: memory autograd keeps for backward"
        " beyond the inputs (MiB)",
        "",
        "| op | size | shape | pass | eager ms | compile ms | triton ms | vs eager | vs compile "
        "| peak eager / compile / triton | saved eager / triton |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = " / ".join(_fmt(r.peak[k]) for k in ("eager", "compile", "triton"))
        saved = " / ".join(_fmt(r.saved[k]) for k in ("eager", "triton"))
        lines.append(f"| {r.op} | {r.size} | {r.shape} | {r.mode} | {_fmt(r.ms['eager'])} | {_fmt(r.ms['compile'])} "
                     f"| {_fmt(r.ms['triton'])} | {_ratio(r.ms['eager'], r.ms['triton'])} "
                     f"| {_ratio(r.ms['compile'], r.ms['triton'])} | {peak} | {saved} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla bench kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None,
                   help=f"comma list of {', '.join(SIZES)} (default: tiny on CPU, all on CUDA)")
    p.add_argument("--ops", default=None, help="comma list of op names (default: all)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="activation dtype (log-probs and the policy loss stay float32)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's). On a busy machine use 1: OpenMP threads "
                        "that wait for a descheduled sibling make compiled CPU kernels look 100x slower")
    p.add_argument("--min-time", type=float, default=0.1, help="seconds per timing sample (default 0.1)")
    p.add_argument("--out", default=None,
                   help="markdown output path (default benchmarks/results/kernels_<device>.md; '-' = stdout only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    dtype = getattr(torch, args.dtype)
    sizes = args.sizes.split(",") if args.sizes else (list(SIZES) if device.type == "cuda" else ["tiny"])
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
    all_ops = [c.op for c in _cases("tiny", torch.device("cpu"), torch.float32)]
    ops = args.ops.split(",") if args.ops else all_ops
    bad = [o for o in ops if o not in all_ops]
    if bad:
        raise SystemExit(f"unknown op(s) {bad}; choose from {all_ops}")

    use_triton = device.type == "cuda" and dispatch.HAS_TRITON
    if use_triton:
        triton_note = "triton: fused kernels measured on this GPU"
    elif device.type == "cuda":
        triton_note = "triton: not installed, not measured"
    else:
        triton_note = "triton: not measured without CUDA (on CPU the dispatch runs the torch reference)"

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows: list[Row] = []
    for size in sizes:
        for case in _cases(size, device, dtype):
            if case.op in ops:
                rows.extend(_measure(case, size, device, not args.no_compile, use_triton, args.min_time, log))
    command = shlex.join(sys.argv) if argv is None else shlex.join(["vla", "bench", "kernels", *argv])
    text = render(rows, device, dtype, command, triton_note, torch.get_num_threads())
    print(text)
    if args.out != "-":
        out = Path(args.out) if args.out else Path("benchmarks") / "results" / f"kernels_{_slug(device)}.md"
        _write(out, text)
        log(f"wrote {out}")
    return 0

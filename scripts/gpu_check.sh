#!/usr/bin/env bash
# GPU check of the fused Triton kernels: environment, tests/kernels, kernel benchmark.
#
#   bash scripts/gpu_check.sh            (from the repository root, on a CUDA machine)
#
# Meant for a bare, offline CUDA machine whose python3 already holds torch and triton:
# installs this checkout with --no-deps (nothing is downloaded), runs the kernel tests
# on the GPU, then `benchmarks/fused_kernels.py` per size, each phase under a time cap so
# the whole script ends inside GPU_CHECK_BUDGET seconds (default 420). Everything
# lands in $OUT (default /tmp/gpu_check_out), at most 8 files:
#   env.txt            nvidia-smi, versions, which optional packages import
#   pytest_kernels.log / .xml   the test run (junit xml names every failure)
#   bench.log          benchmark progress (stderr) and exit codes
#   kernels_h200_*.md  the benchmark tables, 4 at most (also written under benchmarks/results/)
# Smoke test on a CPU box: GPU_CHECK_TESTS=tests/kernels/test_kernels_vib.py
#   GPU_CHECK_BENCH_ARGS="--ops vib_sample --min-time 0.001" PYTHON=.venv/bin/python bash scripts/gpu_check.sh
set -u -o pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MUJOCO_GL=egl
OUT=${OUT:-/tmp/gpu_check_out}
BUDGET=${GPU_CHECK_BUDGET:-420}
PY=${PYTHON:-python3}
TESTS=${GPU_CHECK_TESTS:-tests/kernels}
read -r -a EXTRA <<<"${GPU_CHECK_BENCH_ARGS:-}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p "$OUT"
left() { echo $((BUDGET - SECONDS)); }
# cap SECONDS_WANTED RESERVE: seconds to give a phase, leaving RESERVE for the phases after it
cap() { local c=$(($(left) - $2)); [ "$c" -gt "$1" ] && c=$1; echo "$c"; }

{
  echo "== date"; date -u +%Y-%m-%dT%H:%M:%SZ
  echo "== uname"; uname -a; nproc
  echo "== nvidia-smi"; nvidia-smi 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv 2>&1
  echo "== python"; command -v "$PY"; "$PY" -V
  "$PY" - <<'EOF' 2>&1
import importlib, torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "cc", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count,
          "mem GiB", round(p.total_memory / 2**30, 1))
print("triton", triton.__version__)
for name in ["transformers", "safetensors", "numpy", "pytest", "xdist", "pytest_timeout", "setuptools",
             "draccus", "mujoco", "robosuite", "gymnasium", "kernels"]:
    try:
        m = importlib.import_module(name)
        print(f"import {name}: ok {getattr(m, '__version__', '')}")
    except Exception as e:
        print(f"import {name}: FAILED {type(e).__name__}: {e}")
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# Make `vla.kernels` importable (pyproject maps vla.kernels -> kernels/, so PYTHONPATH=. is not enough).
echo "== install (editable, no deps, offline)" | tee -a "$OUT/env.txt"
"$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >>"$OUT/env.txt" 2>&1
if ! (cd /tmp && "$PY" -c "import vla.kernels") >>"$OUT/env.txt" 2>&1; then
  # Fallback: a meta-path finder for the mapped packages, loaded through sitecustomize.
  echo "editable install failed; using a sitecustomize finder" | tee -a "$OUT/env.txt"
  mkdir -p /tmp/vla_shim
  cat >/tmp/vla_shim/sitecustomize.py <<EOF
import importlib.machinery, sys
_ROOT = "$ROOT"
_MAPPED = {"vla.kernels", "vla.sim", "vla.real_robot"}
class _VlaFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return importlib.machinery.PathFinder.find_spec(name, [_ROOT]) if name in _MAPPED else None
sys.meta_path.append(_VlaFinder)
EOF
  export PYTHONPATH="/tmp/vla_shim:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
(cd /tmp && "$PY" -c "import vla.kernels as k; print('vla.kernels from', k.__file__, 'HAS_TRITON', k.HAS_TRITON)") 2>&1 \
  | tee -a "$OUT/env.txt"

echo "== tests/kernels"
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 8"
T=$(cap 170 180)
[ "$T" -lt 20 ] && T=20
echo "cmd: timeout $T $PY -m pytest -q $XDIST $TESTS" | tee "$OUT/pytest_kernels.log"
# shellcheck disable=SC2086
timeout "$T" "$PY" -m pytest -q $XDIST -p no:cacheprovider --junitxml="$OUT/pytest_kernels.xml" $TESTS 2>&1 \
  | tee -a "$OUT/pytest_kernels.log"
echo "pytest exit: $? (after ${SECONDS}s)" | tee -a "$OUT/pytest_kernels.log"

# Benchmark: pi0 sizes first (the ones that matter), split in two op groups so that a cap hit
# loses half a table, each with torch.compile under a cap, falling back to eager vs triton
# alone when compiling does not fit; then bf16 at pi0 sizes, then the tiny sizes.
bench() {  # bench NAME CAP ARGS...
  local name=$1 t=$2; shift 2
  [ "$t" -lt 20 ] && { echo "skip $name: ${t}s left" | tee -a "$OUT/bench.log"; return 1; }
  echo "== $name (cap ${t}s): benchmarks/fused_kernels.py $*" | tee -a "$OUT/bench.log"
  timeout "$t" "$PY" benchmarks/fused_kernels.py "$@" "${EXTRA[@]}" --out "benchmarks/results/kernels_h200_$name.md" \
    2>>"$OUT/bench.log" >/dev/null
  local rc=$?
  echo "$name exit: $rc (after ${SECONDS}s)" | tee -a "$OUT/bench.log"
  [ $rc -eq 0 ] && cp "benchmarks/results/kernels_h200_$name.md" "$OUT/" && cat "$OUT/kernels_h200_$name.md"
  return $rc
}
NORM=ada_rms_norm,gated_residual,gated_residual_ada_rms_norm,euler_projection
FLOW=flow_sde_step,flow_sde_log_prob,flow_gaussian_log_prob,flow_interpolate,flow_matching_loss,clipped_policy_loss,vib_sample
M="--min-time 0.05"
# shellcheck disable=SC2086
{
  bench pi0_norm "$(cap 110 150)" --sizes pi0 --ops $NORM $M \
    || bench pi0_norm_nocompile "$(cap 40 120)" --sizes pi0 --ops $NORM $M --no-compile
  bench pi0_flow "$(cap 130 70)" --sizes pi0 --ops $FLOW $M \
    || bench pi0_flow_nocompile "$(cap 40 60)" --sizes pi0 --ops $FLOW $M --no-compile
  bench pi0_bf16_nocompile "$(cap 50 30)" --sizes pi0 --dtype bfloat16 $M --no-compile
  bench tiny "$(cap 150 25)" --sizes tiny $M || bench tiny_nocompile "$(cap 40 0)" --sizes tiny $M --no-compile
}
echo "done after ${SECONDS}s" | tee -a "$OUT/bench.log"

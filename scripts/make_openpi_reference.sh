#!/usr/bin/env bash
# Regenerate tests/policy/fixtures/openpi_{pi0,pi05}_reference with openpi's own PyTorch pi0 / pi0.5
# (scripts/make_openpi_pi0_fixture.py; docs/PRETRAINED.md, "openpi reference").
#
# Usage: OPENPI_GIT=/path/to/openpi/.git scripts/make_openpi_reference.sh [pi0|pi05 ...]
#
# Builds (once) a venv beside the project's with what openpi's PyTorch model code imports:
# transformers 4.53.2 (openpi's pin) with openpi's models_pytorch/transformers_replace files copied
# over it, as openpi's README says, plus pydantic / numpydantic (openpi/shared/normalize.py) and
# numpy < 2 (openpi's pin). torch is held by a constraints file at the project's own CPU build, so
# pip never pulls a CUDA one: openpi pins torch 2.7.1, which is not run here (the model code uses
# nothing newer than it). openpi itself is not pip-installed (its dependencies include jax[cuda12],
# flax, orbax and lerobot); the generator runs its source from the git directory, see its docstring.
#
# Environment:
#   OPENPI_GIT        openpi's git directory (bare or .git); required
#   VLA_OPENPI_VENV   where the venv lives (default ~/.cache/vla/openpi-venv)
#   VLA_PYTHON        the project's Python (default .venv/bin/python), whose torch version is used
#   PYTHON            the Python 3.11 to build the venv from (default python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLA_OPENPI_VENV:-$HOME/.cache/vla/openpi-venv}"
PROJECT_PYTHON="${VLA_PYTHON:-$REPO/.venv/bin/python}"
: "${OPENPI_GIT:?set OPENPI_GIT to the git directory of openpi}"
TORCH="$("$PROJECT_PYTHON" -c 'import torch; print(torch.__version__)')"
KINDS=("$@")
[ ${#KINDS[@]} -gt 0 ] || KINDS=(pi0 pi05)

have_venv() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<PY 2>/dev/null
import sys
import numpydantic, pydantic, torch, transformers  # noqa: F401
from transformers.models.siglip import check
sys.exit(not (transformers.__version__ == "4.53.2" and torch.__version__ == "$TORCH"
              and check.check_whether_transformers_replace_is_installed_correctly()))
PY
}

if ! have_venv; then
  echo "building openpi reference venv at $VENV (torch $TORCH, transformers 4.53.2 + openpi's transformers_replace)" >&2
  mkdir -p "$(dirname "$VENV")"
  "${PYTHON:-python3}" -m venv "$VENV"
  printf 'torch==%s\n' "$TORCH" > "$VENV/torch-constraints.txt"
  "$VENV/bin/python" -m pip install --quiet -c "$VENV/torch-constraints.txt" \
    "torch==$TORCH" "transformers==4.53.2" "numpy<2" pydantic numpydantic
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  src="$(mktemp -d)"
  git --git-dir="$OPENPI_GIT" archive HEAD src/openpi/models_pytorch/transformers_replace | tar -x -C "$src"
  cp -r "$src/src/openpi/models_pytorch/transformers_replace/"* "$site/transformers/"
  rm -rf "$src"
  have_venv || { echo "the openpi reference venv at $VENV does not import as expected" >&2; exit 1; }
fi

cd "$REPO"
for kind in "${KINDS[@]}"; do
  out="tests/policy/fixtures/openpi_${kind}_reference"
  rm -rf "$out"
  OMP_NUM_THREADS=1 "$VENV/bin/python" scripts/make_openpi_pi0_fixture.py "$out" --openpi-git "$OPENPI_GIT" --kind "$kind"
done

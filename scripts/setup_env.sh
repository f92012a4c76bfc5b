#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the package.
# Usage: scripts/setup_env.sh [EXTRAS]   e.g. "train" or "dev"; VENV overrides the location (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train}"
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
# The CPU build of torch first, pinned: a looser request makes pip pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${extras}]"

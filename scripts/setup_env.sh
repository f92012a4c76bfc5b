#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the package with exactly the
# versions in requirements-lock.txt (the ones CI last tested; scripts/lock.sh refreshes it).
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
python -m pip install -q "pip==26.3"
# The lock is a constraints file: every package installed for these extras gets its locked version,
# torch its CPU build (a looser request makes pip pull a multi-GB CUDA build).
python -m pip install -q -c requirements-lock.txt -e ".[${extras}]"

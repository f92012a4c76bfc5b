#!/usr/bin/env bash
# Set up .venv with the test extras and run the test-suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
. "${VENV:-.venv}/bin/activate"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
python -m pytest -q "$@"

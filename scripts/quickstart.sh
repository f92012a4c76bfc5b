#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then demos -> dataset -> training -> evaluation report.
# Extra arguments go to `vla quickstart` (for example --train.steps=500).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh train
. "${VENV:-.venv}/bin/activate"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
vla quickstart --config configs/quickstart.yaml "$@"

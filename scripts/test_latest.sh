#!/usr/bin/env bash
# Early warning, not part of CI: install the newest versions pyproject.toml allows (ignoring the lock)
# into a throw-away venv and run the test-suite there, so an upstream release that breaks us is found
# by us before a user finds it. Extra arguments go to pytest. KEEP=1 keeps the venv and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d "${TMPDIR:-/tmp}/vla-latest.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$venv"' EXIT
"${PYTHON:-python3}" -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
# The CPU build of torch first, pinned: a looser request makes pip pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
python -m pip freeze --exclude-editable > "$venv/versions.txt"
echo "newest allowed versions (differences from requirements-lock.txt):"
# Names compared as pip normalises them (case, "_" = "-"); ROS wheels install under shorter names
# (ros-rclpy as rclpy), so they show up on both sides.
normalise() { sed 's/ .*//; s/_/-/g' | tr 'A-Z' 'a-z' | sort; }
diff <(grep -E '^[A-Za-z0-9]' requirements-lock.txt | normalise) <(normalise < "$venv/versions.txt") | grep '^[<>]' || true
export MUJOCO_GL="${MUJOCO_GL:-egl}"
python -m pytest -q "$@"

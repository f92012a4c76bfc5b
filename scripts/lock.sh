#!/usr/bin/env bash
# Refresh requirements-lock.txt: the exact versions `scripts/setup_env.sh` installs (and CI tests),
# resolved by pip-tools from pyproject.toml's ranges with every extra that the `dev` extra pulls in.
# Run it on a machine whose pip finds the CPU torch build (this one: /opt/wheels), then run
# scripts/test.sh and commit the lock only if the suite passes.
# Usage: scripts/lock.sh [--upgrade]   (without it, pins already in the lock are kept where possible)
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d "${TMPDIR:-/tmp}/vla-lock.XXXXXX")
trap 'rm -rf "$tools"' EXIT
"${PYTHON:-python3}" -m venv "$tools/venv"
. "$tools/venv/bin/activate"
python -m pip install -q "pip==26.3" "pip-tools==7.7.0"
CUSTOM_COMPILE_COMMAND="scripts/lock.sh --upgrade" pip-compile -q --extra dev --strip-extras --allow-unsafe \
  --no-emit-index-url --no-emit-find-links -o requirements-lock.txt "$@" pyproject.toml
# The dev extra names the project itself; its line would pin this checkout's absolute path.
sed -i '/^vla-rl @ /d' requirements-lock.txt
echo "requirements-lock.txt refreshed; now run scripts/test.sh before committing it"

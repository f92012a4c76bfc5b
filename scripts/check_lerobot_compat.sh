#!/usr/bin/env bash
# Check that lerobot 0.4.4 itself loads the datasets vla.data writes.
#
# lerobot cannot share the project's venv: it pins torch < 2.11 (a CUDA build
# of torch 2.10 from PyPI, about 8 GB with its nvidia-* wheels), while the
# project runs torch 2.13 CPU. A slim venv (torch 2.13 + lerobot --no-deps)
# does not work either: lerobot/datasets/utils.py imports torchvision at module
# level, and PyPI's torchvision wheels are CUDA builds whose compiled ops fail
# to load beside a CPU torch ("operator torchvision::nms does not exist").
# So this builds lerobot's own pinned environment, outside the repository,
# once (about 3 minutes on a 2-core machine), and reuses it afterwards.
#
# Environment:
#   VLA_LEROBOT_VENV  where lerobot's venv lives (default ~/.cache/vla/lerobot-0.4.4-venv)
#   VLA_PYTHON        the project's Python (default: .venv/bin/python in the repo)
#   PYTHON            the Python 3.10+ to build lerobot's venv from (default python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLA_LEROBOT_VENV:-$HOME/.cache/vla/lerobot-0.4.4-venv}"
PROJECT_PYTHON="${VLA_PYTHON:-$REPO/.venv/bin/python}"
LEROBOT_VERSION="0.4.4"

have_lerobot() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata, sys
import lerobot.datasets.lerobot_dataset  # noqa: F401  (fails if a dependency is missing)
sys.exit(importlib.metadata.version("lerobot") != "$LEROBOT_VERSION")
PY
}

if ! have_lerobot; then
  echo "building lerobot $LEROBOT_VERSION venv at $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "lerobot==$LEROBOT_VERSION"
  have_lerobot || { echo "lerobot $LEROBOT_VERSION did not import from $VENV" >&2; exit 1; }
fi

cd "$REPO"
VLA_LEROBOT_PYTHON="$VENV/bin/python" "$PROJECT_PYTHON" -m pytest tests/data/test_lerobot_compat.py tests/data/test_lerobot_compat_video.py -v -rs "$@"

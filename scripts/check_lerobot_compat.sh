#!/usr/bin/env bash
# Run the tests that need lerobot 0.4.4 itself: datasets (tabular and video) both ways, the
# `vla export --format lerobot` load in lerobot, and the live pi0 / pi0.5 / SmolVLA parity tests.
#
# lerobot cannot share the project's venv, so it gets its own, outside the repository, built once
# and reused. lerobot 0.4.4 pins torch < 2.11 and torchvision < 0.26; `pip install lerobot==0.4.4`
# would download a CUDA torch 2.10 (several GB). This script does not do that: it installs a torch /
# torchvision pair first (default on x86_64: torch 2.14.1 + torchvision 0.29.1, which pip takes from
# this machine's local disk), then lerobot with --no-deps, then lerobot's runtime requirements
# (its Requires-Dist, minus what dataset and policy loading never import: wandb, rerun-sdk, pynput,
# cmake, torchcodec, hf-transfer, imageio-ffmpeg) under a constraints file that holds torch and
# torchvision where they are, plus transformers 4.57 and num2words (lerobot's smolvla / pi extras).
# About 6 GB and 2-3 minutes here.
#
# So lerobot runs outside its pin (torch 2.14 / torchvision 0.29). What that costs, checked on
# 2026-12-05 (docs/PRETRAINED.md, "lerobot 0.4.4 compatibility runs"): torchvision > 0.25 has no
# `torchvision.io.VideoReader`, which lerobot's pyav video decoding calls; scripts/lerobot_video_compat.py
# puts torchvision 0.25's pyav reader back for its `read` mode. Nothing else failed for torch's sake.
# On aarch64 the default pair is torch 2.9.1 + torchvision 0.24.1, inside lerobot's pin (not run here).
#
# Environment:
#   VLA_LEROBOT_VENV        where lerobot's venv lives (default ~/.cache/vla/lerobot-0.4.4-venv)
#   VLA_PYTHON              the project's Python (default: .venv/bin/python in the repo)
#   PYTHON                  the Python 3.10+ to build lerobot's venv from (default python3; 3.11 here)
#   VLA_LEROBOT_TORCH       torch version for lerobot's venv (default: by `uname -m`, see above)
#   VLA_LEROBOT_TORCHVISION torchvision version to match it
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLA_LEROBOT_VENV:-$HOME/.cache/vla/lerobot-0.4.4-venv}"
PROJECT_PYTHON="${VLA_PYTHON:-$REPO/.venv/bin/python}"
LEROBOT_VERSION="0.4.4"
case "$(uname -m)" in
  aarch64|arm64) DEFAULT_TORCH=2.9.1 DEFAULT_TORCHVISION=0.24.1 ;;
  *) DEFAULT_TORCH=2.14.1 DEFAULT_TORCHVISION=0.29.1 ;;
esac
TORCH="${VLA_LEROBOT_TORCH:-$DEFAULT_TORCH}"
TORCHVISION="${VLA_LEROBOT_TORCHVISION:-$DEFAULT_TORCHVISION}"

# lerobot 0.4.4's Requires-Dist with the ranges it declares, less the packages named above.
LEROBOT_REQUIREMENTS=(
  "datasets>=4.0.0,<5.0.0" "diffusers>=0.27.2,<0.36.0" "huggingface-hub>=0.34.2,<0.36.0"
  "accelerate>=1.10.0,<2.0.0" "setuptools>=71.0.0,<81.0.0" "einops>=0.8.0,<0.9.0"
  "opencv-python-headless>=4.9.0,<4.13.0" "av>=15.0.0,<16.0.0" "jsonlines>=4.0.0,<5.0.0"
  "packaging>=24.2,<26.0" "pyserial>=3.5,<4.0" "draccus==0.10.0" "gymnasium>=1.1.1,<2.0.0"
  "deepdiff>=7.0.1,<9.0.0" "imageio>=2.34.0,<3.0.0" "termcolor>=2.4.0,<4.0.0"
  # extras smolvla / pi (transformers-dep): the parity and export checks build these policies
  "transformers>=4.57.1,<4.58" "num2words>=0.5.14,<0.6.0" "safetensors>=0.4.3,<1.0.0"
)

have_lerobot() {
  [ -x "$VENV/bin/python" ] && HF_HUB_OFFLINE=1 "$VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata, sys
import lerobot.datasets.lerobot_dataset  # noqa: F401  (fails if a dependency is missing)
import transformers  # noqa: F401  (the policy checks need it)
from lerobot.processor import PolicyProcessorPipeline  # noqa: F401
sys.exit(importlib.metadata.version("lerobot") != "$LEROBOT_VERSION")
PY
}

if ! have_lerobot; then
  echo "building lerobot $LEROBOT_VERSION venv at $VENV (torch $TORCH, torchvision $TORCHVISION)" >&2
  mkdir -p "$(dirname "$VENV")"
  "${PYTHON:-python3}" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install --quiet)
  CONSTRAINTS="$VENV/torch-constraints.txt"
  printf 'torch==%s\ntorchvision==%s\n' "$TORCH" "$TORCHVISION" > "$CONSTRAINTS"
  "${PIP[@]}" "torch==$TORCH" "torchvision==$TORCHVISION"
  "${PIP[@]}" --no-deps "lerobot==$LEROBOT_VERSION"
  "${PIP[@]}" -c "$CONSTRAINTS" "${LEROBOT_REQUIREMENTS[@]}"
  got="$("$VENV/bin/python" -c 'import torch, torchvision; print(torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])')"
  [ "$got" = "$TORCH $TORCHVISION" ] || { echo "torch / torchvision changed to $got" >&2; exit 1; }
  have_lerobot || { echo "lerobot $LEROBOT_VERSION did not import from $VENV" >&2; exit 1; }
fi

cd "$REPO"
VLA_LEROBOT_PYTHON="$VENV/bin/python" "$PROJECT_PYTHON" -m pytest -v -rs \
  tests/data/test_lerobot_compat.py tests/data/test_lerobot_compat_video.py \
  tests/policy/test_lerobot_export.py \
  tests/policy/test_pretrained_lerobot_parity.py tests/policy/test_pretrained_smolvla_parity.py "$@"

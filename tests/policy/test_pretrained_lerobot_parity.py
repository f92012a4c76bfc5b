"""Parity against lerobot 0.4.4 run live (the fixtures in tests/policy/fixtures are a frozen copy).

Needs VLA_LEROBOT_PYTHON (a Python with lerobot 0.4.4, as for tests/data/test_lerobot_compat.py)
that can also import transformers 4.57: lerobot's pi0 needs it, and the lerobot venv may not
have it. Install it beside the venv and point VLA_LEROBOT_PYTHONPATH at it:

    $VLA_LEROBOT_PYTHON -m pip install --no-deps --target /work/lerobot-tf transformers==4.57.6 "tokenizers<0.23"
    VLA_LEROBOT_PYTHONPATH=/work/lerobot-tf
"""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.policy.pretrained_helpers import reference_batch
from vla.policy.pretrained import load_pretrained

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_lerobot_reference.py"
LEROBOT_PYTHON = os.environ.get("VLA_LEROBOT_PYTHON")
EXTRA_PATH = os.environ.get("VLA_LEROBOT_PYTHONPATH", "")

pytestmark = pytest.mark.skipif(not LEROBOT_PYTHON, reason="VLA_LEROBOT_PYTHON is not set (a Python with lerobot 0.4.4)")


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if EXTRA_PATH:
        env["PYTHONPATH"] = EXTRA_PATH
    return env


@pytest.fixture(scope="module")
def lerobot_has_transformers():
    probe = subprocess.run([LEROBOT_PYTHON, "-c", "import transformers, lerobot"], env=_env(), capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"{LEROBOT_PYTHON} cannot import transformers beside lerobot (set VLA_LEROBOT_PYTHONPATH, "
                    f"see this file's docstring): {probe.stderr.strip().splitlines()[-1:]}")


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_live_lerobot_parity(tmp_path, kind, lerobot_has_transformers):
    out = tmp_path / kind
    run = subprocess.run([LEROBOT_PYTHON, str(SCRIPT), str(out), "--kind", kind], env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    policy = load_pretrained(out / "checkpoint", tokenizer_path=str(out / "tokenizer"))
    batch, ref = reference_batch(out)
    actions = policy.predict_action_chunk(batch, noise=ref["noise"])
    assert (actions - ref["actions"]).abs().max() < 1e-5

"""SmolVLA parity against lerobot 0.4.4 run live (tests/policy/fixtures/lerobot_smolvla is a frozen copy).

Needs VLA_LEROBOT_PYTHON (a Python with lerobot 0.4.4). lerobot's SmolVLA runs on stock transformers
4.57 (no openpi patch), which the lerobot venv may lack: point VLA_LEROBOT_PYTHONPATH at one
(tests/policy/test_pretrained_lerobot_parity.py's docstring shows how it was installed).
"""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.policy.pretrained_helpers import reference_batch
from vla.policy.pretrained import load_pretrained

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_lerobot_smolvla_reference.py"
LEROBOT_PYTHON = os.environ.get("VLA_LEROBOT_PYTHON")
EXTRA_PATH = os.environ.get("VLA_LEROBOT_PYTHONPATH", "")

pytestmark = pytest.mark.skipif(not LEROBOT_PYTHON, reason="VLA_LEROBOT_PYTHON is not set (a Python with lerobot 0.4.4)")


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if EXTRA_PATH:
        env["PYTHONPATH"] = EXTRA_PATH
    return env


def test_live_lerobot_smolvla_parity(tmp_path):
    probe = subprocess.run([LEROBOT_PYTHON, "-c", "import transformers, lerobot"], env=_env(), capture_output=True,
                           text=True)
    if probe.returncode:
        pytest.skip(f"{LEROBOT_PYTHON} cannot import transformers beside lerobot (set VLA_LEROBOT_PYTHONPATH): "
                    f"{probe.stderr.strip().splitlines()[-1:]}")
    out = tmp_path / "smolvla"
    run = subprocess.run([LEROBOT_PYTHON, str(SCRIPT), str(out)], env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    policy = load_pretrained(out / "checkpoint", tokenizer_path=str(out / "tokenizer"))
    batch, ref = reference_batch(out)
    actions = policy.predict_action_chunk(batch, noise=ref["noise"])
    assert (actions - ref["actions"]).abs().max() < 1e-5
    x0, noise, t = ref["train_actions"], ref["noise"], ref["train_time"]
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
    with torch.no_grad():
        cache, state_token = policy.encode_observation(batch)
        losses = (noise - x0 - policy.velocity(cache, state_token, x_t, t)) ** 2
    assert torch.allclose(losses, ref["train_losses"], rtol=1e-5, atol=1e-4)

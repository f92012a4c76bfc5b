"""Parity against lerobot 0.4.4 run live (the fixtures in tests/policy/fixtures are a frozen copy).

Needs VLA_LEROBOT_PYTHON (a Python with lerobot 0.4.4, as for tests/data/test_lerobot_compat.py)
that can also import transformers 4.57: lerobot's pi0 needs it, and the lerobot venv may not
have it. Install it beside the venv and point VLA_LEROBOT_PYTHONPATH at it:

    $VLA_LEROBOT_PYTHON -m pip install --no-deps --target /work/lerobot-tf transformers==4.57.6 "tokenizers<0.23"
    VLA_LEROBOT_PYTHONPATH=/work/lerobot-tf
"""

import pytest

from tests.policy.pretrained_helpers import assert_actions_match, load_reference, requires_lerobot, run_reference_script

pytestmark = requires_lerobot


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_live_lerobot_parity(tmp_path, kind):
    root = run_reference_script("make_lerobot_reference.py", tmp_path / kind, "--kind", kind)
    assert_actions_match(load_reference(root), root)

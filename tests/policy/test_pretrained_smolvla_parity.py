"""SmolVLA parity against lerobot 0.4.4 run live (tests/policy/fixtures/lerobot_smolvla is a frozen copy).

Needs VLA_LEROBOT_PYTHON (a Python with lerobot 0.4.4). lerobot's SmolVLA runs on stock transformers
4.57 (no openpi patch), which the lerobot venv may lack: point VLA_LEROBOT_PYTHONPATH at one
(tests/policy/test_pretrained_lerobot_parity.py's docstring shows how it was installed).
"""

from tests.policy.pretrained_helpers import (assert_actions_match, assert_training_losses_match, load_reference,
                                             requires_lerobot, run_reference_script)

pytestmark = requires_lerobot


def test_live_lerobot_smolvla_parity(tmp_path):
    root = run_reference_script("make_lerobot_smolvla_reference.py", tmp_path / "smolvla")
    policy = load_reference(root)
    assert_training_losses_match(policy, *assert_actions_match(policy, root))

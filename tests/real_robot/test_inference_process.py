"""serve-ros's inference process: a checkpoint served on loopback by a child process, called like a policy."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("websockets")

from tiny_checkpoint import save_tiny_policy  # noqa: E402

from vla.real_robot.inference_process import LocalPolicyProcess  # noqa: E402
from vla.real_robot.policy_client import numpy_batch  # noqa: E402

ACTION_MEAN = np.array([0.1, -0.2, 0.3, 0.0, 0.0, 0.0, 1.0], dtype=np.float32)


def test_child_process_serves_the_checkpoint_and_stops_with_close(tmp_path):
    checkpoint = save_tiny_policy(tmp_path / "policy", state_dim=8, action_mean=ACTION_MEAN)
    child = LocalPolicyProcess(str(checkpoint))
    try:
        assert child.client.metadata["cameras"] == ["agentview"] and child.client.metadata["action_dim"] == 7
        observation = {"images": {"agentview": np.zeros((64, 64, 3), np.uint8)}, "state": np.zeros(8, np.float32),
                       "task": "lift the cube"}
        chunk = child.client.predict_action_chunk(numpy_batch(observation, ["agentview"]))
        assert chunk.shape == (1, 10, 7)
        assert np.abs(chunk - ACTION_MEAN).max() < 0.1  # the checkpoint's pinned actions, computed in the child
    finally:
        child.close()
    assert not child.process.is_alive()


def test_a_checkpoint_that_cannot_load_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="inference process for .*nowhere exited"):
        LocalPolicyProcess(str(tmp_path / "nowhere"), start_timeout_s=240)  # generous: torch imports slowly under load

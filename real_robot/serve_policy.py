"""Entry point behind `vla serve-policy`: a policy checkpoint behind a PolicyServer.

For robots without a GPU: run this on the GPU machine, and on the robot
`vla serve-ros --policy ws://HOST:PORT ...` (PolicyClient) in place of a checkpoint path.
Requests arrive as numpy arrays (wire_format); the policy takes torch tensors.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np


def numpy_batch_to_torch(device: str = "cpu"):
    """A PolicyServer batch_transform: arrays -> tensors on `device`; strings and lists pass through."""
    import torch

    def transform(batch: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in batch.items():
            if isinstance(value, np.ndarray):
                out[key] = torch.from_numpy(value).to(device)
            elif isinstance(value, dict):
                out[key] = transform(value)
            else:
                out[key] = value
        return out

    return transform


def serve_policy(policy: str, host: str = "0.0.0.0", port: int = 8000, device: str = "cpu") -> None:
    """Load the checkpoint and serve it until Ctrl-C."""
    from vla.policy.registry import load_policy
    from vla.real_robot.policy_server import PolicyServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = load_policy(policy, map_location=device).eval()
    c = model.config
    metadata = {"cameras": list(c.cameras), "state_dim": c.state_dim, "action_dim": c.action_dim,
                "chunk_size": c.chunk_size}
    server = PolicyServer(model, host=host, port=port, batch_transform=numpy_batch_to_torch(device),
                          metadata=metadata)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass

"""Turn environment observations (the dict sim/robosuite_env.py returns) into a policy batch (lerobot's keys)."""

from __future__ import annotations

import numpy as np
import torch

from vla.policy.flow_matching_policy import ENV_STATE_KEY, IMAGE_PREFIX, STATE_KEY


def observations_to_batch(observations: list[dict], cameras: list[str]) -> dict:
    """[{"images": {cam: uint8 HxWx3}, "state": float32 [D], "environment_state": float32 [E] (optional),
    "task": str}, ...] -> batch of B."""
    batch = {}
    for cam in cameras:
        missing = [i for i, o in enumerate(observations) if cam not in o["images"]]
        if missing:
            raise KeyError(f"observation has no camera {cam!r} (it has {sorted(observations[missing[0]]['images'])})")
        batch[IMAGE_PREFIX + cam] = torch.from_numpy(np.stack([o["images"][cam] for o in observations]))
    batch[STATE_KEY] = torch.from_numpy(np.stack([o["state"] for o in observations]).astype(np.float32))
    if all("environment_state" in o for o in observations):
        batch[ENV_STATE_KEY] = torch.from_numpy(np.stack([o["environment_state"] for o in observations])
                                                .astype(np.float32))
    batch["task"] = [o["task"] for o in observations]
    return batch

"""A fingerprint of the code a remote env worker runs, so driver and worker can be compared at connect.

On a cluster every node imports its own installed copy of the package. If a node runs other
simulation code, or another MuJoCo / robosuite, its episodes are not the driver's episodes: physics
and observations may differ silently (and an episode replayed there after a lost worker would not
reproduce). So each worker reports this fingerprint and the driver refuses a worker whose differs.

What is hashed is what an env worker runs: the ``vla.sim`` package's source files and the
physics stack's versions, plus the package version. The learner side (vla.rl, vla.policy) runs only
on the driver, so editing it does not invalidate workers.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

_SIM_DIR = Path(__file__).resolve().parent


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _source_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.py")):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def code_fingerprint() -> dict[str, str]:
    """What must match between driver and env workers: name -> version or source hash."""
    return {
        "vla-rl": _version("vla-rl"),
        "vla.sim sources": _source_hash(_SIM_DIR),
        "mujoco": _version("mujoco"),
        "robosuite": _version("robosuite"),
    }


def fingerprint_mismatch(driver: dict[str, str], worker: dict[str, str]) -> str | None:
    """None if equal, else which parts differ, in words (driver's value vs the worker's)."""
    keys = sorted(set(driver) | set(worker))
    diffs = [f"{k}: driver {driver.get(k, 'missing')}, worker {worker.get(k, 'missing')}"
             for k in keys if driver.get(k) != worker.get(k)]
    return "; ".join(diffs) or None

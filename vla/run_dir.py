"""A run's output folder: refuse to mix two runs in one folder, and leave nothing behind a run
that failed before producing anything.

Two runs in one folder would overwrite each other's files and mix their TensorBoard events, so
a non-empty folder is refused unless the user says `--overwrite=true` (the old contents go) or,
for commands that can continue, `--resume=true`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from vla.config import ConfigError
from vla.errors import UserError


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def claim_output_dir(path: str | Path, overwrite: bool = False, resumable: bool = False) -> Path:
    """Check (and with `overwrite` empty) a run's output folder before anything is written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_dir {path} is a file, not a folder")
    if _is_empty(path):
        return path
    if not overwrite:
        hint = " or --resume=true to continue the run in it" if resumable else ""
        held = ", ".join(sorted(p.name for p in path.iterdir())[:6])
        raise ConfigError(f"output_dir {path} is not empty (it holds {held}); pass --overwrite=true to replace "
                          f"its contents{hint}, or choose another --output_dir")
    shutil.rmtree(path)
    return path


@contextlib.contextmanager
def removed_on_user_error(path: str | Path, keep: str | None = None) -> Iterator[Path]:
    """Remove `path` if the block fails with a user error (bad policy, dataset, config) and the folder
    did not exist or was empty before: a refused run leaves no stray files. Other failures and
    interrupts keep what was written (checkpoints, partial logs) for the user to inspect or resume,
    and so does a run that wrote `keep` (a subfolder holding resumable results) before failing."""
    path = Path(path)
    was_empty = _is_empty(path)
    try:
        yield path
    except UserError:
        if was_empty and path.is_dir() and not (keep and (path / keep).exists()):
            shutil.rmtree(path, ignore_errors=True)
        raise

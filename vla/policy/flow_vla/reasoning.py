"""Latent reasoning of the VLA: latent tokens in the prefix stream after the observation (LAPO, as LaST-R1).

docs/ALGORITHMS.md section 5. After the prefix (images, instruction) the prefix stream runs on, one token
at a time, causally: the first input is the prefix's pooled final features, and each latent z_i (the
stream's final, normed features at that position) is fed back as the next input embedding. The length
head reads the latents at the candidate lengths (vla/policy/latent_reasoning.py). The action expert then
attends to the prefix and to the first L latents: the latents past L are masked out of its attention.

As for the state policy, the chain always runs to the longest candidate (p_m needs every end logit), and
teacher forcing feeds the stored latents as inputs within each row's length only, running on its own past
it (docs/DECISIONS.md).
"""

from __future__ import annotations

import torch

from vla.policy.flow_vla.transformer import MixtureTransformer, PrefixCache
from vla.policy.latent_reasoning import latent_mask


def think_in_prefix(transformer: MixtureTransformer, cache: PrefixCache, n_latents: int,
                    forced: torch.Tensor | None = None,
                    lengths: torch.Tensor | None = None) -> tuple[PrefixCache, torch.Tensor]:
    """The cache extended by n_latents latent tokens, and the latents [B, n_latents, width]. With `forced`
    [B, n_latents, width] and `lengths` [B], the inputs after the latents within each row's length are the
    forced ones."""
    if (forced is None) != (lengths is None):
        raise ValueError("teacher forcing needs both the stored latents and their lengths")
    if forced is not None and forced.shape[1] != n_latents:
        raise ValueError(f"stored latents have shape {tuple(forced.shape)}, this policy thinks in {n_latents} latents")
    x = cache.pooled()[:, None]
    latents = []
    for i in range(n_latents):
        cache, out = transformer.extend_prefix(cache, x.to(cache.keys[0].dtype))
        latents.append(out[:, 0])
        x = out if forced is None else torch.where((i < lengths)[:, None, None], forced[:, i: i + 1].to(out), out)
    return cache, torch.stack(latents, dim=1)


def keep_latents_within(cache: PrefixCache, lengths: torch.Tensor, n_latents: int) -> PrefixCache:
    """The cache with its last n_latents positions masked out past each row's length (the expert never
    attends to a latent the policy did not choose to think)."""
    mask = cache.mask.clone()
    mask[:, -n_latents:] = latent_mask(lengths.to(mask.device), n_latents)
    return PrefixCache(cache.keys, cache.values, mask, cache.next_position, cache.hidden, cache.reasoning)

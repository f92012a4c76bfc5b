"""Two-stream Gemma-style transformer with shared attention (pi0's layout).

The prefix stream (images + language, the "VLM") and the expert stream (state
+ noisy actions) have their own weights in every layer but attend jointly:
queries, keys and values of both streams are concatenated per layer. The
prefix never attends to the expert, so its keys and values can be computed
once per observation and reused for every denoising step; training runs the
same two calls, which keeps one code path for both.

Parameter names follow Hugging Face's Gemma (`layers.N.self_attn.q_proj`,
`mlp.gate_proj`, `input_layernorm`, ...) so published pi0 weights map by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vla.kernels import ada_rms_norm, gated_residual


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: the weight is stored as an offset from 1."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        return ada_rms_norm(x, self.weight, eps=self.eps, weight_offset=1.0), None


class AdaRMSNorm(nn.Module):
    """RMSNorm whose scale, shift and residual gate come from a condition (the flow time).

    The projection starts with scale 0, shift 0 and gate 1: at initialisation
    this is a plain pre-norm block (a zero gate would also cut the gradient to
    the prefix, so the vision encoder would not learn on the first step).
    """

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6, with_gate: bool = True):
        super().__init__()
        self.eps = eps
        self.with_gate = with_gate
        self.dense = nn.Linear(cond_dim, dim * (3 if with_gate else 2))
        nn.init.zeros_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)
        if with_gate:
            nn.init.ones_(self.dense.bias[2 * dim :])

    def forward(self, x: torch.Tensor, cond: torch.Tensor):
        mod = self.dense(cond)
        if self.with_gate:
            scale, shift, gate = mod.chunk(3, dim=-1)
        else:
            (scale, shift), gate = mod.chunk(2, dim=-1), None
        return ada_rms_norm(x, scale=scale, shift=shift, eps=self.eps), gate


class GemmaMLP(nn.Module):
    """Gated MLP (gate / up / down projections); Gemma's gate activation is tanh-approximated GELU."""

    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    @staticmethod
    def activation(x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.activation(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """q / k / v / o projections; keys and values are projected from kv_in wide inputs (default: width)."""

    def __init__(self, width: int, num_heads: int, num_kv_heads: int, head_dim: int, kv_in: int | None = None):
        super().__init__()
        kv_in = width if kv_in is None else kv_in
        self.q_proj = nn.Linear(width, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(kv_in, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(kv_in, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, width, bias=False)


class DecoderLayer(nn.Module):
    def __init__(self, width, mlp_dim, num_heads, num_kv_heads, head_dim, cond_dim=None):
        super().__init__()
        self.self_attn = Attention(width, num_heads, num_kv_heads, head_dim)
        self.mlp = GemmaMLP(width, mlp_dim)
        if cond_dim is None:
            self.input_layernorm = RMSNorm(width)
            self.post_attention_layernorm = RMSNorm(width)
        else:
            self.input_layernorm = AdaRMSNorm(width, cond_dim)
            self.post_attention_layernorm = AdaRMSNorm(width, cond_dim)


class Stream(nn.Module):
    """One stream's weights: a stack of decoder layers and a final norm."""

    def __init__(self, width, mlp_dim, depth, num_heads, num_kv_heads, head_dim, cond_dim=None):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(width, mlp_dim, num_heads, num_kv_heads, head_dim, cond_dim) for _ in range(depth)
        )
        self.norm = RMSNorm(width) if cond_dim is None else AdaRMSNorm(width, cond_dim, with_gate=False)


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary position embedding; x [B, heads, T, D], positions [B, T]."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None, :, None] * freqs  # [B, 1, T, half]
    sin, cos = angles.sin(), angles.cos()
    x1, x2 = x.float()[..., :half], x.float()[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


@dataclass
class PrefixCache:
    """Per-layer keys and values of the prefix, with its validity mask and length."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor  # [B, P] bool, True = real token
    next_position: torch.Tensor  # [B] first position id of the suffix
    hidden: torch.Tensor | None = None  # [B, P, width] final prefix features (value heads read these)
    # Latent reasoning (flow_vla/reasoning.py): its latents extend keys, values and mask past `hidden`'s
    # P positions, and the thought (vla/policy/latent_reasoning.py) rides along for RL rollouts.
    reasoning: object | None = None

    def repeat_interleave(self, n: int) -> "PrefixCache":
        return self.select(torch.arange(self.mask.shape[0], device=self.mask.device).repeat_interleave(n))

    def select(self, rows: torch.Tensor) -> "PrefixCache":
        """The cache of the given batch rows (rows may repeat)."""
        pick = lambda t: t.index_select(0, rows.to(t.device))
        return PrefixCache([pick(k) for k in self.keys], [pick(v) for v in self.values], pick(self.mask),
                           pick(self.next_position), None if self.hidden is None else pick(self.hidden),
                           None if self.reasoning is None else self.reasoning.select(rows))

    def pooled(self) -> torch.Tensor:
        """Masked mean of the final prefix features, [B, width] (the prefix's own tokens, not its latents)."""
        m = self.mask[:, : self.hidden.shape[1], None].to(self.hidden.dtype)
        return (self.hidden * m).sum(1) / m.sum(1).clamp(min=1)

    def record(self) -> dict[str, torch.Tensor] | None:
        """Per-row choices made before the actions, which RL rollouts store (the latent reasoning's)."""
        return None if self.reasoning is None else self.reasoning.record()


class PrefixExpertTransformer(nn.Module):
    """What pi0's MixtureTransformer and SmolVLA's transformer (vla/policy/smolvla/transformer.py) share:
    per-head projections with RoPE, grouped-query attention, and optional gradient checkpointing
    (recompute each block in the backward pass instead of storing its activations: 3B fine-tuning)."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.gradient_checkpointing = False  # vla/policy/finetune.py sets it

    def _run(self, fn, *args, **kwargs):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return fn(*args, **kwargs)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """[B, T, n * head_dim] -> [B, n, T, head_dim]."""
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)

    def _qkv(self, layer: nn.Module, h: torch.Tensor, positions: torch.Tensor):
        attn = layer.self_attn
        q = rope(self._heads(attn.q_proj(h), self.num_heads), positions)
        k = rope(self._heads(attn.k_proj(h), self.num_kv_heads), positions)
        return q, k, self._heads(attn.v_proj(h), self.num_kv_heads)

    def _attend(self, q, k, v, mask):
        groups = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=1 / math.sqrt(self.head_dim))
        b, _, t, _ = out.shape
        return out.transpose(1, 2).reshape(b, t, -1)


class MixtureTransformer(PrefixExpertTransformer):
    def __init__(self, width, mlp_dim, expert_width, expert_mlp_dim, depth, num_heads,
                 num_kv_heads, head_dim, expert_cond_dim=None):
        super().__init__(num_heads, num_kv_heads, head_dim)
        self.vlm = Stream(width, mlp_dim, depth, num_heads, num_kv_heads, head_dim)
        self.expert = Stream(expert_width, expert_mlp_dim, depth, num_heads, num_kv_heads, head_dim,
                             cond_dim=expert_cond_dim)

    def _run_block(self, *args, **kwargs):
        return self._run(self._block, *args, **kwargs)

    def _block(self, layer, h, mask_fn, positions, cond, past_kv=None):
        """One pre-norm block for a stream; returns new hidden states and this stream's (k, v)."""
        normed, gate = layer.input_layernorm(h, cond)
        q, k, v = self._qkv(layer, normed, positions)
        if past_kv is not None:
            k_all, v_all = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        else:
            k_all, v_all = k, v
        attn_out = layer.self_attn.o_proj(self._attend(q, k_all, v_all, mask_fn))
        h = h + attn_out if gate is None else gated_residual(h, attn_out, gate)
        normed, gate = layer.post_attention_layernorm(h, cond)
        mlp_out = layer.mlp(normed)
        h = h + mlp_out if gate is None else gated_residual(h, mlp_out, gate)
        return h, (k, v)

    def encode_prefix(self, prefix: torch.Tensor, prefix_mask: torch.Tensor) -> PrefixCache:
        """Run the prefix stream; prefix [B, P, width], prefix_mask [B, P] bool."""
        positions = prefix_mask.long().cumsum(-1) - 1
        attn_mask = prefix_mask[:, None, :].expand(-1, prefix.shape[1], -1)  # bidirectional over real tokens
        keys, values, h = [], [], prefix
        for layer in self.vlm.layers:
            h, (k, v) = self._run_block(layer, h, attn_mask, positions, None)
            keys.append(k)
            values.append(v)
        hidden = self.vlm.norm(h)[0]
        return PrefixCache(keys, values, prefix_mask, prefix_mask.long().sum(-1), hidden)

    def extend_prefix(self, cache: PrefixCache, tokens: torch.Tensor) -> tuple[PrefixCache, torch.Tensor]:
        """Run the prefix stream over tokens [B, T, width] appended to the cached prefix, causally (each sees
        the prefix and the tokens before it): latent reasoning's thoughts. Returns the longer cache and the
        tokens' final features [B, T, width] (the prefix's own `hidden` stays as it was)."""
        b, t, _ = tokens.shape
        positions = cache.next_position[:, None] + torch.arange(t, device=tokens.device)
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        mask = torch.cat([cache.mask[:, None, :].expand(-1, t, -1), causal[None].expand(b, -1, -1)], dim=-1)
        keys, values, h = [], [], tokens
        for layer, k, v in zip(self.vlm.layers, cache.keys, cache.values):
            h, (k_new, v_new) = self._run_block(layer, h, mask, positions, None, past_kv=(k, v))
            keys.append(torch.cat([k, k_new], dim=2))
            values.append(torch.cat([v, v_new], dim=2))
        real = torch.ones(b, t, dtype=torch.bool, device=tokens.device)
        longer = PrefixCache(keys, values, torch.cat([cache.mask, real], dim=1), cache.next_position + t, cache.hidden)
        return longer, self.vlm.norm(h)[0]

    def decode_suffix(self, suffix: torch.Tensor, suffix_attn: torch.Tensor, cache: PrefixCache,
                      cond: torch.Tensor | None) -> torch.Tensor:
        """Run the expert stream over the suffix, attending to the cached prefix.

        suffix [B, S, expert_width]; suffix_attn [S, S] bool (which suffix token sees which).
        """
        b, s, _ = suffix.shape
        positions = cache.next_position[:, None] + torch.arange(s, device=suffix.device)
        mask = torch.cat([cache.mask[:, None, :].expand(-1, s, -1), suffix_attn[None].expand(b, -1, -1)], dim=-1)
        h = suffix
        for layer, k, v in zip(self.expert.layers, cache.keys, cache.values):
            h, _ = self._run_block(layer, h, mask, positions, cond, past_kv=(k, v))
        return self.expert.norm(h, cond)[0]

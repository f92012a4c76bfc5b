"""SmolVLA's transformer: a truncated SmolLM2 (Llama) prefix stream and an interleaved action expert.

The prefix stream runs once per observation and leaves every layer's keys (after RoPE) and values
in a PrefixCache, as the pi0 transformer does. The expert has one layer per prefix layer, of two
kinds:
- self-attention layers (every `self_attn_every_n_layers`-th, from layer 0): the expert's own keys
  and values are appended to the cached prefix ones; action tokens see the whole prefix and the
  earlier action tokens (causal), at positions following the prefix;
- cross-attention layers: the expert's queries attend to the prefix only, through its own k / v
  projections applied to the cached prefix keys and values (so they take the prefix's kv width);
  its query positions restart at 0.
Both streams use the prefix's head count and head width (the expert copies the text config and
only changes the hidden width), and RoPE with base 10000 (lerobot's own rotary, not the text
config's rope_theta). Parameter names follow Hugging Face's Llama so published weights map by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla.policy.flow_vla.transformer import Attention, GemmaMLP, PrefixCache, PrefixExpertTransformer, rope


class LlamaRMSNorm(nn.Module):
    """RMSNorm whose weight multiplies directly (Llama's convention, unlike Gemma's 1 + w)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        # Cast back: fine-tuning in bf16 keeps norm weights in fp32 (vla/policy/finetune.py).
        return (self.weight * h.to(x.dtype)).to(x.dtype)


class LlamaMLP(GemmaMLP):
    """Llama's gated MLP: Gemma's projections, SiLU on the gate."""

    activation = staticmethod(F.silu)


class Layer(nn.Module):
    def __init__(self, width: int, mlp_dim: int, kv_in: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 eps: float):
        super().__init__()
        self.self_attn = Attention(width, num_heads, num_kv_heads, head_dim, kv_in=kv_in)
        self.mlp = LlamaMLP(width, mlp_dim)
        self.input_layernorm = LlamaRMSNorm(width, eps)
        self.post_attention_layernorm = LlamaRMSNorm(width, eps)


class Stack(nn.Module):
    def __init__(self, layers: list[Layer], width: int, eps: float):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = LlamaRMSNorm(width, eps)


class SmolVLATransformer(PrefixExpertTransformer):
    def __init__(self, width, mlp_dim, expert_width, expert_mlp_dim, depth, num_heads, num_kv_heads, head_dim,
                 self_attn_every_n_layers: int, eps: float):
        super().__init__(num_heads, num_kv_heads, head_dim)
        kv_width = num_kv_heads * head_dim
        n = self_attn_every_n_layers  # 1: every layer self-attention (lerobot's attention_mode "self_attn")
        self.cross = [not (n > 0 and i % n == 0) for i in range(depth)]
        self.vlm = Stack([Layer(width, mlp_dim, width, num_heads, num_kv_heads, head_dim, eps) for _ in range(depth)],
                         width, eps)
        self.expert = Stack([Layer(expert_width, expert_mlp_dim, kv_width if cross else expert_width, num_heads,
                                   num_kv_heads, head_dim, eps) for cross in self.cross], expert_width, eps)

    @staticmethod
    def _mlp_block(layer: Layer, h: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        h = h + layer.self_attn.o_proj(attn_out)
        return h + layer.mlp(layer.post_attention_layernorm(h))

    # ------------------------------------------------------------------ prefix
    def _prefix_block(self, layer: Layer, h, mask, positions):
        q, k, v = self._qkv(layer, layer.input_layernorm(h), positions)
        return self._mlp_block(layer, h, self._attend(q, k, v, mask)), k, v

    def encode_prefix(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, attn: torch.Tensor) -> PrefixCache:
        """prefix [B, P, width], prefix_mask [B, P] bool (real tokens), attn [B, P, P] bool (who sees whom)."""
        positions = prefix_mask.long().cumsum(-1) - 1
        mask = attn & prefix_mask[:, None, :]
        keys, values, h = [], [], prefix
        for layer in self.vlm.layers:
            h, k, v = self._run(self._prefix_block, layer, h, mask, positions)
            keys.append(k)
            values.append(v)
        return PrefixCache(keys, values, prefix_mask, prefix_mask.long().sum(-1), self.vlm.norm(h))

    # ------------------------------------------------------------------ expert
    def _self_block(self, layer: Layer, h, k_prefix, v_prefix, mask, positions):
        q, k, v = self._qkv(layer, layer.input_layernorm(h), positions)
        out = self._attend(q, torch.cat([k_prefix, k], dim=2), torch.cat([v_prefix, v], dim=2), mask)
        return self._mlp_block(layer, h, out)

    def _cross_block(self, layer: Layer, h, k_prefix, v_prefix, mask, positions):
        normed = layer.input_layernorm(h)
        attn = layer.self_attn
        q = rope(self._heads(attn.q_proj(normed), self.num_heads), positions)
        # The cached prefix keys / values, heads flattened back to the kv width, projected by the expert.
        flat = lambda t: t.transpose(1, 2).flatten(2).to(attn.k_proj.weight.dtype)
        k = self._heads(attn.k_proj(flat(k_prefix)), self.num_kv_heads)
        v = self._heads(attn.v_proj(flat(v_prefix)), self.num_kv_heads)
        return self._mlp_block(layer, h, self._attend(q, k, v, mask))

    def decode_suffix(self, suffix: torch.Tensor, cache: PrefixCache) -> torch.Tensor:
        """Run the expert over the action tokens suffix [B, S, expert_width]; returns its normed output."""
        b, s, _ = suffix.shape
        steps = torch.arange(s, device=suffix.device)
        causal = steps[:, None] >= steps[None, :]
        prefix_mask = cache.mask[:, None, :].expand(-1, s, -1)
        self_mask = torch.cat([prefix_mask, causal[None].expand(b, -1, -1)], dim=-1)
        self_positions = cache.next_position[:, None] + steps
        cross_positions = steps[None].expand(b, -1)
        h = suffix
        for layer, cross, k, v in zip(self.expert.layers, self.cross, cache.keys, cache.values):
            if cross:
                h = self._run(self._cross_block, layer, h, k, v, prefix_mask, cross_positions)
            else:
                h = self._run(self._self_block, layer, h, k, v, self_mask, self_positions)
        return self.expert.norm(h)

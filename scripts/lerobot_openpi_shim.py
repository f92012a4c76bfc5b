"""Stand-in for openpi's patched transformers, so lerobot 0.4.4's pi0 / pi0.5 run offline.

lerobot's pi0 code asks for a transformers fork (openpi's "transformers_replace":
Gemma RMSNorm with an optional adaptive condition, a gated residual, a version
check in `transformers.models.siglip.check`). That fork cannot be installed
here, so this module patches a stock transformers 4.57 in memory with the same
behaviour. What it changes, and why that keeps the reference honest:

- RMSNorm(x, cond) returns (normed, gate). With cond None it is stock Gemma
  RMSNorm (gate None); with a condition it applies openpi's adaRMS
  (`normed * (1 + scale) + shift`, with a third chunk as residual gate).
- The Gemma decoder layer and model forward are re-plumbed to pass `cond`
  through and to leave the caller's KV cache untouched during the denoising
  passes (`use_cache=False`): each Euler step attends to the prefix cache plus
  its own suffix, the way lerobot builds its attention masks. Inputs are not
  multiplied by sqrt(width) here, as in lerobot's own joint forward
  (`compute_layer_complete`), which lerobot's training path runs unpatched.
- PaliGemma's `get_image_features` returns the projector output as is: openpi's fork drops stock
  transformers' division by sqrt(text width) (the fork's Gemma forward does not multiply by it
  either). Until 2026-12-05 this shim left the division in, and the lerobot fixtures, and this
  project's loader, divided image tokens by sqrt(width); openpi's own PyTorch pi0
  (tests/policy/fixtures/openpi_pi0_reference) showed it.

Run with the lerobot interpreter only; the project's code never imports it.
"""

from __future__ import annotations

import copy
import sys
import types

import torch
from torch import nn


def install() -> None:
    from transformers.modeling_outputs import BaseModelOutputWithPast
    from transformers.models.gemma import modeling_gemma as mg

    check = types.ModuleType("transformers.models.siglip.check")
    check.check_whether_transformers_replace_is_installed_correctly = lambda: True
    sys.modules["transformers.models.siglip.check"] = check
    import transformers.models.siglip as siglip_pkg

    siglip_pkg.check = check

    class CondRMSNorm(nn.Module):
        def __init__(self, dim: int, eps: float = 1e-6, cond_dim: int | None = None):
            super().__init__()
            self.eps, self.dim, self.cond_dim = eps, dim, cond_dim
            if cond_dim is None:
                self.weight = nn.Parameter(torch.zeros(dim))
            else:
                self.dense = nn.Linear(cond_dim, dim * 3)
                nn.init.zeros_(self.dense.weight)

        def forward(self, x, cond=None):
            normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
            if cond is None:
                return (normed * (1.0 + self.weight.float())).type_as(x), None
            mod = self.dense(cond)
            if mod.dim() == 2:
                mod = mod[:, None]
            scale, shift, gate = mod.chunk(3, dim=-1)
            return (normed * (1.0 + scale.float()) + shift.float()).type_as(x), gate

    def gated_residual(x, y, gate):
        if x is None or y is None:
            return x if y is None else y
        return x + y if gate is None else x + y * gate

    layer_init = mg.GemmaDecoderLayer.__init__

    def decoder_init(self, config, layer_idx):
        layer_init(self, config, layer_idx)
        cond_dim = getattr(config, "adarms_cond_dim", None) if getattr(config, "use_adarms", False) else None
        self.input_layernorm = CondRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)
        self.post_attention_layernorm = CondRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)

    def decoder_forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                        use_cache=False, cache_position=None, position_embeddings=None, adarms_cond=None, **kw):
        residual = hidden_states
        h, gate = self.input_layernorm(hidden_states, cond=adarms_cond)
        h, _ = self.self_attn(hidden_states=h, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=past_key_values, use_cache=use_cache, cache_position=cache_position,
                              position_embeddings=position_embeddings)
        h = gated_residual(residual, h, gate)
        residual = h
        h, gate = self.post_attention_layernorm(h, cond=adarms_cond)
        return gated_residual(residual, self.mlp(h), gate)

    model_init = mg.GemmaModel.__init__

    def model_init_patched(self, config):
        model_init(self, config)
        cond_dim = getattr(config, "adarms_cond_dim", None) if getattr(config, "use_adarms", False) else None
        self.norm = CondRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)

    def model_forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                      inputs_embeds=None, use_cache=None, cache_position=None, adarms_cond=None, **kw):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = mg.DynamicCache(config=self.config)
        elif past_key_values is not None and not use_cache:
            past_key_values = copy.deepcopy(past_key_values)  # a denoising step must not grow the prefix cache
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        h = inputs_embeds
        position_embeddings = self.rotary_emb(h, position_ids)
        for layer in self.layers[: self.config.num_hidden_layers]:
            h = layer(h, attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                      use_cache=use_cache, position_embeddings=position_embeddings, adarms_cond=adarms_cond)
        h, _ = self.norm(h, cond=adarms_cond)
        return BaseModelOutputWithPast(last_hidden_state=h, past_key_values=past_key_values if use_cache else None)

    from transformers.models.paligemma import modeling_paligemma as mp

    def get_image_features(self, pixel_values):  # openpi's transformers_replace/models/paligemma
        return self.multi_modal_projector(self.vision_tower(pixel_values).last_hidden_state)

    mp.PaliGemmaModel.get_image_features = get_image_features

    init_weights = mg.GemmaPreTrainedModel._init_weights

    def init_weights_patched(self, module):
        if isinstance(module, CondRMSNorm):  # stock init zeroes `.weight`, which adaRMS norms lack
            if module.cond_dim is None:
                module.weight.data.zero_()
            return
        init_weights(self, module)

    mg.GemmaPreTrainedModel._init_weights = init_weights_patched
    mg.GemmaRMSNorm = CondRMSNorm
    mg._gated_residual = gated_residual
    mg.GemmaDecoderLayer.__init__ = decoder_init
    mg.GemmaDecoderLayer.forward = decoder_forward
    mg.GemmaDecoderLayer.__call__ = nn.Module.__call__  # skip the checkpointing wrapper's kwarg filtering
    mg.GemmaModel.__init__ = model_init_patched
    mg.GemmaModel.forward = model_forward

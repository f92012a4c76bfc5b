"""SmolVLA (Hugging Face's flow-matching VLA) as a policy of this project.

Prefix: per camera, SmolVLM's vision tower and pixel-shuffle connector; the newline-terminated
prompt through SmolLM2's token table; the normalised state as one token projected to the text
width. Image and prompt tokens see each other but not the state token, which sees everything
(lerobot's block mask). Expert: action tokens fused with the flow time through an MLP (as pi0),
run through vla/policy/smolvla/transformer.py's interleaved self / cross-attention layers.

The policy interface is FlowMatchingPolicy's (encode_observation / velocity, which RL's sampler calls,
plus forward / sample_actions / predict_action_chunk / select_action / save_pretrained): the state
lives in the prefix, so encode_observation returns an empty state token [B, 0, expert_width].
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SmolVLMVisionConfig
from transformers.models.smolvlm.modeling_smolvlm import SmolVLMConnector, SmolVLMVisionTransformer

from vla.policy.flow_matching_policy import FlowMatchingPolicy
from vla.policy.flow_vla.policy import FlowVLAPolicy, policy_normalizer, sinusoidal_time_embedding, vision_tower_sizes
from vla.policy.flow_vla.token_prompt import TokenPrompt
from vla.policy.flow_vla.transformer import PrefixCache
from vla.policy.smolvla.config import SMOLVLA_TYPE, SmolVLAConfig
from vla.policy.smolvla.transformer import SmolVLATransformer


def resize_with_pad_top_left(img: torch.Tensor, size: int) -> torch.Tensor:
    """Fit [B, 3, H, W] in [0, 1] into size x size keeping the aspect ratio, black padding on the top
    and left (SmolVLA's resize; pi0's centres the image instead)."""
    h, w = img.shape[-2:]
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    img = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.pad(img, (size - rw, 0, size - rh, 0), value=0.0)


def patch_position_ids(sides: int, device) -> torch.Tensor:
    """Position-embedding rows of a full sides x sides patch grid, as transformers 4.5x (lerobot 0.4.4's,
    which SmolVLA was trained and is checked against) computes them: fractional coordinates
    i / sides * (1 - 1e-6) bucketised at k / sides, which in float32 lands every row and column
    after the first one bucket early (0, 0, 1, 2, ...). transformers 5 rewrote this to 0, 1, 2, ...;
    the published weights expect the former, so it is computed here rather than left to the version."""
    boundaries = torch.arange(1 / sides, 1.0, 1 / sides, device=device)
    coords = torch.arange(sides, device=device, dtype=torch.float32) / sides * (1 - 1e-6)
    buckets = torch.bucketize(coords, boundaries, right=True)
    return (buckets[:, None] * sides + buckets[None, :]).flatten()


def prefix_attention(n_tokens: int, device) -> torch.Tensor:
    """[P, P] bool: image and prompt tokens see each other; the last (state) token sees all of them."""
    attn = torch.ones(n_tokens, n_tokens, dtype=torch.bool, device=device)
    attn[:-1, -1] = False
    return attn


class SmolVLAPolicy(FlowMatchingPolicy):
    checkpoint_type = SMOLVLA_TYPE  # save_policy writes it into config.json (vla/policy/registry.py)

    @classmethod
    def config_from_dict(cls, data: dict, source: str) -> SmolVLAConfig:
        return SmolVLAConfig.from_dict(data, source=source)

    def __init__(self, config: SmolVLAConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        vision_cfg = SmolVLMVisionConfig(**vision_tower_sizes(c), layer_norm_eps=c.vision_eps)
        self.vision = SmolVLMVisionTransformer(vision_cfg)
        # The connector reads three fields of SmolVLM's composite config; nothing else of it is needed.
        self.multi_modal_projector = SmolVLMConnector(SimpleNamespace(
            scale_factor=c.scale_factor, vision_config=SimpleNamespace(hidden_size=c.vision_width),
            text_config=SimpleNamespace(hidden_size=c.width)))
        self.language = TokenPrompt(c.vocab_size, c.width, c.max_language_tokens, c.prompt_format, c.tokenizer_path)
        self.transformer = SmolVLATransformer(
            c.width, c.mlp_dim, c.expert_width, c.expert_mlp_dim, c.depth, c.num_heads, c.num_kv_heads, c.head_dim,
            c.self_attn_every_n_layers, c.rms_norm_eps)
        w = c.expert_width
        self.state_proj = nn.Linear(c.model_state_dim, c.width)  # the state is a prefix token
        self.action_in_proj = nn.Linear(c.model_action_dim, w)
        self.action_out_proj = nn.Linear(w, c.model_action_dim)
        self.action_time_mlp_in, self.action_time_mlp_out = nn.Linear(2 * w, w), nn.Linear(w, w)
        self.normalizer = policy_normalizer(c)

    # Buffers after meta-device loading, the device, the camera images and the padded state are
    # FlowVLAPolicy's (only the resize differs); the state then goes into the prefix here.
    materialize_buffers = FlowVLAPolicy._materialize_normalizer_and_check
    device = FlowVLAPolicy.device
    velocity_hidden_dim = FlowVLAPolicy.velocity_hidden_dim
    pooled_dim = FlowVLAPolicy.pooled_dim
    _images = FlowVLAPolicy._images
    _camera_pixels = FlowVLAPolicy._camera_pixels
    normalized_state = FlowVLAPolicy.normalized_state

    # ----------------------------------------------------------------- inputs
    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        return resize_with_pad_top_left(img.float(), self.config.image_size)

    def vision_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """SmolVLM's vision tower on full square images [B, 3, S, S] -> [B, patches, vision_width]."""
        emb = self.vision.embeddings
        patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)
        sides = self.config.image_size // self.config.patch_size
        h = patches + emb.position_embedding(patch_position_ids(sides, pixels.device))[None]
        h = self.vision.encoder(inputs_embeds=h, attention_mask=None).last_hidden_state
        return self.vision.post_layernorm(h)

    def embed_prefix(self, batch: dict, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        tokens, masks = [], []
        b = len(batch["task"])
        dtype = self.state_proj.weight.dtype
        for camera in c.cameras:
            pixels, empty = self._camera_pixels(batch, camera, b)
            features = self.vision_features(pixels.to(dtype))
            # SmolVLA scales image tokens up by sqrt(width), as it does prompt embeddings.
            img_tokens = self.multi_modal_projector(features) * math.sqrt(c.width)
            tokens.append(img_tokens)
            masks.append(torch.full(img_tokens.shape[:2], not empty, dtype=torch.bool, device=self.device))
        lang, lang_mask = self.language(list(batch["task"]), self.device)
        tokens += [lang, self.state_proj(state.to(dtype))[:, None]]
        masks += [lang_mask, torch.ones(b, 1, dtype=torch.bool, device=self.device)]
        return torch.cat([t.to(dtype) for t in tokens], dim=1), torch.cat(masks, dim=1)

    def encode_observation(self, batch: dict) -> tuple[PrefixCache, torch.Tensor]:
        """The prefix's per-layer keys / values, and an empty state token (the state is in the prefix)."""
        prefix, mask = self.embed_prefix(batch, self.normalized_state(batch))
        attn = prefix_attention(prefix.shape[1], self.device)[None].expand(prefix.shape[0], -1, -1)
        cache = self.transformer.encode_prefix(prefix, mask, attn)
        return cache, prefix.new_zeros(prefix.shape[0], 0, self.config.expert_width)

    # ------------------------------------------------------------- denoiser
    def velocity(self, cache: PrefixCache, state_token: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 return_hidden: bool = False):
        """v(x_t, t | obs) for a normalised chunk x_t [B, H, A] (A may be the real action dims: the
        padded ones are then held at zero) and times t [B]; with return_hidden also the expert's
        final features [B, H, expert_width]. state_token is empty for SmolVLA and unused."""
        c = self.config
        narrow = x_t.shape[-1]
        x_t = F.pad(x_t, (0, c.model_action_dim - narrow)).to(self.action_in_proj.weight.dtype)
        actions = self.action_in_proj(x_t)
        time_emb = sinusoidal_time_embedding(t, c.expert_width, c.time_min_period, c.time_max_period).to(actions.dtype)
        fused = torch.cat([actions, time_emb[:, None].expand_as(actions)], dim=-1)
        suffix = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
        out = self.transformer.decode_suffix(suffix, cache)
        v = self.action_out_proj(out).float()[..., :narrow]
        return (v, out) if return_hidden else v


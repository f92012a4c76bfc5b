"""pi0-style flow-matching vision-language-action policy.

Prefix: SigLIP image tokens per camera and frozen MiniLM instruction tokens,
projected to the prefix width. Suffix: one robot-state token and the noisy
action chunk, conditioned on the flow time. The action expert predicts the
velocity v(x_t, t | obs); sampling integrates it with K Euler steps from noise
(t = 1) to actions (t = 0), openpi's convention (docs/ALGORITHMS.md):

    x_t = t * eps + (1 - t) * a,   u = eps - a,   x <- x - dt * v

Method names are lerobot's: forward, predict_action_chunk, select_action,
reset, save_pretrained (vla.policy.registry.load_policy loads what it saves).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from vla.policy.config import PolicyConfig
from vla.policy.flow_matching_policy import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, FlowMatchingPolicy
from vla.policy.flow_vla.language import FrozenLanguageEncoder
from vla.policy.flow_vla.reasoning import keep_latents_within, think_in_prefix
from vla.policy.flow_vla.token_prompt import TokenPrompt
from vla.policy.flow_vla.transformer import MixtureTransformer, PrefixCache
from vla.policy.latent_reasoning import FUTURE_PAD_KEY, FUTURE_PREFIX, LengthHead, Reasoning, warm_up_latent_loss
from vla.policy.normalize import Normalizer
from vla.policy.vib import VariationalBottleneck, frozen_call

FLOW_VLA_TYPE = "flow_vla"  # config.json type (vla/policy/registry.py)


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sine-cosine embedding of the flow time, periods spread geometrically (pi0's choice).

    Angles reach 2*pi/4e-3 ~ 1600 rad, where float32 rounding moves sin/cos by ~1e-4; float64
    (as the reference computes it) keeps published checkpoints within fp32 parity."""
    wide = torch.float32 if t.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=wide)
    period = min_period * (max_period / min_period) ** fraction
    angles = t.to(wide)[:, None] * (2 * math.pi / period)[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


def resize_with_pad(img: torch.Tensor, size: int, pad_value: float = -1.0) -> torch.Tensor:
    """Fit [B, 3, H, W] in [0, 1] into size x size keeping the aspect ratio (pi0's resize).

    pad_value is in SigLIP's [-1, 1] range: -1 is black (openpi). lerobot 0.4.4 pads its [0, 1]
    images with -1, which lands at -3 after scaling; its checkpoints get pad_value -3 for parity."""
    h, w = img.shape[-2:]
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    img = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    top, left = (size - rh) // 2, (size - rw) // 2
    return F.pad(img, (left, size - rw - left, top, size - rh - top), value=(pad_value + 1.0) / 2.0)


def suffix_attention(n_state: int, chunk: int) -> torch.Tensor:
    """[S, S] bool: the state token (if any) sees itself; action tokens see the state and each other."""
    attn = torch.ones(n_state + chunk, n_state + chunk, dtype=torch.bool)
    attn[:n_state, n_state:] = False
    return attn


EMPTY_CAMERA = "empty_camera_"  # lerobot's name for a camera slot the checkpoint fills with a masked black image


def vision_tower_sizes(c: PolicyConfig) -> dict:
    """A policy config's vision sizes as Hugging Face vision configs name them (SigLIP's, SmolVLM's)."""
    return dict(hidden_size=c.vision_width, intermediate_size=c.vision_mlp_dim, num_hidden_layers=c.vision_layers,
                num_attention_heads=c.vision_heads, image_size=c.image_size, patch_size=c.patch_size)


def policy_normalizer(c: PolicyConfig) -> Normalizer:
    """The state / action normaliser a policy config describes (its statistics are loaded separately)."""
    return Normalizer({STATE_KEY: c.state_dim, ACTION_KEY: c.action_dim}, c.normalization, eps=c.normalization_eps)


class FlowVLAPolicy(FlowMatchingPolicy):
    checkpoint_type = FLOW_VLA_TYPE

    @classmethod
    def config_from_dict(cls, data: dict, source: str) -> PolicyConfig:
        return PolicyConfig.from_dict(data, source=source)

    def __init__(self, config: PolicyConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        self.vision = SiglipVisionModel(SiglipVisionConfig(**vision_tower_sizes(c), num_channels=3,
                                                           vision_use_head=False))
        self.multi_modal_projector = nn.Linear(c.vision_width, c.width)
        if c.language == "tokens":
            self.language = TokenPrompt(c.vocab_size, c.width, c.max_language_tokens, c.prompt_format, c.tokenizer_path,
                                        c.prompt_clean)
        else:
            self.language = FrozenLanguageEncoder(c.max_language_tokens)
            self.language_proj = nn.Linear(FrozenLanguageEncoder.width, c.width)
        adarms = c.time_conditioning == "adarms"
        self.transformer = MixtureTransformer(
            c.width, c.mlp_dim, c.expert_width, c.expert_mlp_dim, c.depth, c.num_heads, c.num_kv_heads,
            c.head_dim, expert_cond_dim=c.expert_width if adarms else None,
        )
        w = c.expert_width
        if c.state_token:
            self.state_proj = nn.Linear(c.model_state_dim, w)
        self.action_in_proj = nn.Linear(c.model_action_dim, w)
        self.action_out_proj = nn.Linear(w, c.model_action_dim)
        if adarms:
            self.time_mlp_in, self.time_mlp_out = nn.Linear(w, w), nn.Linear(w, w)
        else:
            self.action_time_mlp_in, self.action_time_mlp_out = nn.Linear(2 * w, w), nn.Linear(w, w)
        self.normalizer = policy_normalizer(c)
        # latent reasoning (LAPO): latent tokens in the prefix stream, and the end decision over their lengths
        self.reasoner = LengthHead(c.width, c.latent_lengths, c.latent_beta) if c.latent_reasoning else None
        # ZPRL's bottleneck on the pooled prefix, decoded into one more prefix token (docs/DECISIONS.md)
        self.vib = VariationalBottleneck(c.width, c.vib_dim) if c.vib_dim else None
        self.n_state_tokens = int(c.state_token)
        self.register_buffer("suffix_attn", suffix_attention(self.n_state_tokens, c.chunk_size), persistent=False)

    def materialize_buffers(self) -> None:
        """Give real values to the buffers of a policy built on the meta device (pretrained loading)."""
        self.suffix_attn = suffix_attention(self.n_state_tokens, self.config.chunk_size)
        emb = self.vision.embeddings
        if emb.position_ids.is_meta:
            emb.position_ids = torch.arange(emb.num_positions).expand((1, -1))
        self._materialize_normalizer_and_check()

    def _materialize_normalizer_and_check(self) -> None:
        """A real normaliser (its statistics are loaded next); no tensor may stay on the meta device.
        SmolVLAPolicy's materialize_buffers is this alone."""
        if self.normalizer.loaded.is_meta:
            self.normalizer = policy_normalizer(self.config)
        left = [n for n, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(f"tensors still on the meta device after loading: {left[:10]}")

    # ----------------------------------------------------------------- inputs
    @property
    def device(self) -> torch.device:
        return self.action_out_proj.weight.device

    @property
    def velocity_hidden_dim(self) -> int:
        """Width of velocity(..., return_hidden=True)'s per-row features (Flow-Noise's head reads them)."""
        return self.config.expert_width

    @property
    def pooled_dim(self) -> int:
        """Width of encode_observation(...)[0].pooled() (the value head reads it)."""
        return self.config.width

    def _images(self, batch: dict, camera: str) -> torch.Tensor:
        key = IMAGE_PREFIX + camera
        if key not in batch:
            have = sorted(k[len(IMAGE_PREFIX):] for k in batch if k.startswith(IMAGE_PREFIX))
            raise KeyError(f"batch has no image for camera {camera!r}: the policy was trained on {self.config.cameras}, the batch has {have}")
        img = batch[key].to(self.device)
        if img.dtype == torch.uint8:  # [B, H, W, 3] as the env and the dataset give it
            img = img.permute(0, 3, 1, 2).float() / 255.0
        size = self.config.image_size
        if img.shape[-2:] != (size, size):
            img = self._resize(img)
        return img * 2.0 - 1.0  # the vision tower's input range

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] to the square image size."""
        size = self.config.image_size
        if self.config.image_resize == "pad":
            return resize_with_pad(img.float(), size, self.config.image_pad_value)
        return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)

    def _camera_pixels(self, batch: dict, camera: str, b: int) -> tuple[torch.Tensor, bool]:
        """A camera's pixels in [-1, 1], and whether it is an empty slot (lerobot's empty_camera_*, filled
        with a black image whose tokens are masked out)."""
        empty = camera.startswith(EMPTY_CAMERA) and IMAGE_PREFIX + camera not in batch
        size = self.config.image_size
        pixels = -torch.ones(b, 3, size, size, device=self.device) if empty else self._images(batch, camera)
        return pixels, empty

    def normalized_state(self, batch: dict) -> torch.Tensor:
        """Normalised state, zero-padded to the model's state width [B, model_state_dim]."""
        state = self.normalizer.normalize(STATE_KEY, batch[STATE_KEY].to(self.device).float())
        return F.pad(state, (0, self.config.model_state_dim - state.shape[-1]))

    def embed_prefix(self, batch: dict, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, masks = [], []
        b = len(batch["task"])
        dtype = self.multi_modal_projector.weight.dtype
        for camera in self.config.cameras:
            pixels, empty = self._camera_pixels(batch, camera, b)
            img_tokens = self.multi_modal_projector(self.vision(pixel_values=pixels.to(dtype)).last_hidden_state)
            if self.config.image_feature_scale:
                img_tokens = img_tokens / self.config.width ** 0.5
            tokens.append(img_tokens)
            masks.append(torch.full(img_tokens.shape[:2], not empty, dtype=torch.bool, device=self.device))
        if self.config.language == "tokens":
            if state is not None and self.config.prompt_state_unpadded:
                state = state[:, :self.config.state_dim]
            lang, lang_mask = self.language(list(batch["task"]), self.device, state)
            tokens.append(lang)
        else:
            lang, lang_mask = self.language(list(batch["task"]), self.device)
            tokens.append(self.language_proj(lang.to(dtype)))
        masks.append(lang_mask)
        return torch.cat([t.to(dtype) for t in tokens], dim=1), torch.cat(masks, dim=1)

    def encode_observation(self, batch: dict) -> tuple[PrefixCache, torch.Tensor]:
        """Prefix keys/values and the state token(s): everything the denoiser needs from the observation.

        For pi0.5-style policies the state is in the prompt and the state token tensor is empty [B, 0, W].
        With latent reasoning the prefix ends with the thought, its length by the evaluation rule; with a
        bottleneck it ends with the token decoded from mu(pooled prefix)."""
        if self.reasoner is not None:
            return self.think(batch)
        if self.vib is not None:
            context, mu = self.bottleneck_encode(batch)
            return self.condition_from_latent(mu, context)
        return self.encode_prefix_and_state(batch)

    def explore_observation(self, batch: dict, generator: torch.Generator | None = None):
        """encode_observation as RL rollouts sample it: the thinking length is drawn from p_m."""
        if self.reasoner is None:
            return self.encode_observation(batch)
        return self.think(batch, sample=True, generator=generator)

    def encode_prefix_and_state(self, batch: dict) -> tuple[PrefixCache, torch.Tensor]:
        """The observation's prefix cache and state token(s), before any latent reasoning."""
        state = self.normalized_state(batch)
        prefix, prefix_mask = self.embed_prefix(batch, state)
        cache = self.transformer.encode_prefix(prefix, prefix_mask)
        if self.config.state_token:
            state_token = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None]
        else:
            state_token = prefix.new_zeros(prefix.shape[0], 0, self.config.expert_width)
        return cache, state_token

    # ------------------------------------------------------------- the bottleneck (ZPRL)
    def bottleneck_encode(self, batch: dict) -> tuple[tuple[PrefixCache, torch.Tensor], torch.Tensor]:
        """((prefix cache, state token) before the bottleneck token, mu(pooled prefix) [B, vib_dim])."""
        cache, state_token = self.encode_prefix_and_state(batch)
        return (cache, state_token), self.vib.encode(cache.pooled().float())[0]

    def condition_from_latent(self, z: torch.Tensor, context: tuple[PrefixCache, torch.Tensor]):
        """The denoiser's condition for latent z: the prefix cache extended by the token e_hat(z)."""
        cache, state_token = context
        token = self.vib.decode(z).to(self.multi_modal_projector.weight.dtype)
        return self.transformer.extend_prefix(cache, token[:, None])[0], state_token

    def bottleneck_loss(self, batch: dict, target) -> tuple[torch.Tensor, dict]:
        """ZPRL's loss on the VLA: ||v(x_t | prefix) - u||^2 + ||v_sg(x_t | sg(prefix) + e_hat(z)) - u||^2
        + beta KL(q || N(0, I)) + gamma ||e_hat - sg(pooled prefix)||^2, where the second term runs the
        prefix stream over the token and the expert with detached weights and a detached prefix, so the
        bottleneck's terms train only the bottleneck. The first term is left out while the policy's own
        weights are all frozen (a bottleneck added to a trained policy): it would train nothing."""
        c = self.config
        cache, state_token = self.encode_prefix_and_state(batch)
        info = {}
        if any(p.requires_grad for n, p in self.named_parameters() if not n.startswith("vib.")):
            flow = target.loss(self.velocity(cache, state_token, target.x_t, target.t))
            info["flow_loss"] = flow.item()
        else:  # a bottleneck added to a frozen policy: the policy's own flow term would train nothing
            flow = 0.0
        e_hat, kl, reconstruction = self.vib.losses(cache.pooled().float())
        detached = PrefixCache([k.detach() for k in cache.keys], [v.detach() for v in cache.values], cache.mask,
                               cache.next_position, cache.hidden.detach())

        def through_bottleneck(e_hat):
            token = e_hat.to(self.multi_modal_projector.weight.dtype)[:, None]
            return self.velocity(self.transformer.extend_prefix(detached, token)[0], state_token.detach(),
                                 target.x_t, target.t)

        through = target.loss(frozen_call(self, through_bottleneck, e_hat, trainable="vib."))
        loss = flow + through + c.vib_beta * kl + c.vib_gamma * reconstruction
        return loss, {"loss": loss.item(), **info, "vib_flow_loss": through.item(), "vib_kl": kl.item(),
                      "vib_reconstruction": reconstruction.item()}

    # ------------------------------------------------------------- what a steering actor reads
    @property
    def steering_feature_dim(self) -> int:
        return self.config.width + self.config.state_dim

    def steering_features(self, batch: dict, condition: PrefixCache) -> torch.Tensor:
        """[pooled prefix, normalised state] [B, width + state_dim]: the frozen policy's own summary of
        the images and the instruction, so the actor needs no vision encoder of its own."""
        state = self.normalized_state(batch)[:, : self.config.state_dim]
        return torch.cat([condition.pooled().float(), state.float()], dim=-1)

    # ------------------------------------------------------------- latent reasoning (LAPO)
    def think(self, batch: dict, lengths: torch.Tensor | None = None, latents: torch.Tensor | None = None,
              sample: bool = False, generator: torch.Generator | None = None) -> tuple[PrefixCache, torch.Tensor]:
        """The observation after latent reasoning: (prefix cache ending with the latents, past each row's length
        masked, and carrying the Reasoning; state token). Lengths are given (with `latents`: the stored
        thought, teacher-forced), drawn from p_m (`sample`) or chosen by the evaluation rule."""
        if self.reasoner is None:
            raise ValueError("this flow_vla policy was built without latent reasoning (policy.latent_reasoning)")
        cache, state_token = self.encode_prefix_and_state(batch)
        start = time.perf_counter()
        n = self.reasoner.max_length
        forced = None if latents is None else latents.to(self.device)
        cache, z = think_in_prefix(self.transformer, cache, n, forced, None if latents is None else lengths.to(self.device))
        log_probs = self.reasoner.length_log_probs(z)
        if lengths is None:
            lengths = self.reasoner.choose(log_probs, sample, generator, self.config.latent_eval_threshold)
        cache = keep_latents_within(cache, lengths.to(self.device), n)
        if self.device.type == "cuda":  # honest timings: wait for queued kernels
            torch.cuda.synchronize(self.device)
        cache.reasoning = Reasoning(z, lengths.to(self.device), log_probs, self.reasoner.candidates,
                                    time.perf_counter() - start)
        return cache, state_token

    def forward(self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None):
        """The flow-matching loss; with latent reasoning the warm-up loss: the flow loss with the expert
        attending to the first L latents, L uniform over the candidates, + latent_end_weight * CE(p, L)
        + latent_loss_weight * mean over latents i <= L (not past the episode's end) of
        1 - cos(z_i, sg(image features of the first camera's frame i * latent_stride frames ahead)),
        the features being the policy's own vision tower and projector, patch-averaged (docs/DECISIONS.md).
        Without future frames in the batch the latent term is left out. With a bottleneck, bottleneck_loss."""
        if self.vib is not None:
            return self.bottleneck_loss(batch, self.flow_target(batch, noise, time))
        if self.reasoner is None:
            return super().forward(batch, noise, time)
        c = self.config
        target = self.flow_target(batch, noise, time)
        cache, state_token = self.encode_prefix_and_state(batch)
        n = self.reasoner.max_length
        cache, z = think_in_prefix(self.transformer, cache, n)
        log_probs = self.reasoner.length_log_probs(z)
        pick, lengths = self.reasoner.uniform(z.shape[0], self.device)
        flow = target.loss(self.velocity(keep_latents_within(cache, lengths, n), state_token, target.x_t, target.t))
        end = F.nll_loss(log_probs, pick)
        loss = flow + c.latent_end_weight * end
        info = {"flow_loss": flow.item(), "end_loss": end.item()}
        if FUTURE_PREFIX + IMAGE_PREFIX + c.cameras[0] in batch:
            pad = batch.get(FUTURE_PAD_KEY, torch.zeros(z.shape[:2], dtype=torch.bool))
            latent = warm_up_latent_loss(z, self.future_image_features(batch), lengths, pad)
            loss = loss + c.latent_loss_weight * latent
            info["latent_loss"] = latent.item()
        return loss, {"loss": loss.item(), **info}

    @torch.no_grad()
    def future_image_features(self, batch: dict) -> torch.Tensor:
        """[B, L_max, width]: the patch-averaged projected vision features of the first camera's future
        frames (no gradient: the warm-up's targets)."""
        camera = self.config.cameras[0]
        frames = batch[FUTURE_PREFIX + IMAGE_PREFIX + camera]
        b, n = frames.shape[:2]
        if n != self.reasoner.max_length:
            raise ValueError(f"the batch has {n} future frames of {camera!r}; latent reasoning regresses "
                             f"{self.reasoner.max_length} (LeRobotDataset(future_offsets=latent_target_offsets(config)))")
        pixels = self._images({IMAGE_PREFIX + camera: frames.reshape(b * n, *frames.shape[2:])}, camera)
        dtype = self.multi_modal_projector.weight.dtype
        tokens = self.multi_modal_projector(self.vision(pixel_values=pixels.to(dtype)).last_hidden_state)
        return tokens.float().mean(1).reshape(b, n, -1)

    # ------------------------------------------------------------- denoiser
    def velocity(self, cache: PrefixCache, state_token: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 return_hidden: bool = False):
        """v(x_t, t | obs) for a normalised action chunk x_t [B, H, A] and times t [B].

        With return_hidden, also the expert's final features at the action tokens [B, H, expert_width]
        (a learned noise head for RL reads them)."""
        w = self.config.expert_width
        narrow = x_t.shape[-1]  # callers may run in the real action dims; padded dims are then held at zero
        x_t = F.pad(x_t, (0, self.config.model_action_dim - narrow)).to(self.action_in_proj.weight.dtype)
        time_emb = sinusoidal_time_embedding(t, w).to(x_t.dtype)
        actions = self.action_in_proj(x_t)
        if self.config.time_conditioning == "adarms":
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb))))
        else:
            cond = None
            fused = torch.cat([actions, time_emb[:, None].expand_as(actions)], dim=-1)
            actions = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
        suffix = torch.cat([state_token, actions], dim=1)
        out = self.transformer.decode_suffix(suffix, self.suffix_attn, cache, cond)[:, self.n_state_tokens:]
        v = self.action_out_proj(out).float()[..., :narrow]
        return (v, out) if return_hidden else v



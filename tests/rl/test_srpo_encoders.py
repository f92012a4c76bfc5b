"""SRPO's three world-model encoders load, embed videos into the size they declare, stay frozen, and
refuse bad setups by name; the small video encoder trains from a LeRobot dataset and reloads exactly."""

import numpy as np
import pytest
import torch

from tests.policy.helpers import make_policy, make_state_policy
from vla.config import ConfigError, SRPOConfig, WorldModelConfig
from vla.rl.srpo.encoders import build_encoder
from vla.rl.srpo.world_model import VideoEncoder, load_video_encoder, save_video_encoder


def videos(b=3, t=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, t, size, size, 3), dtype=np.uint8)


def test_policy_vision_is_a_frozen_copy_of_the_policys_tower():
    policy = make_policy(seed=0)
    encoder = build_encoder(SRPOConfig(encoder="policy_vision"), policy, "agentview")
    v = videos()
    h = encoder(v)
    assert h.shape == (3, policy.config.vision_width) and encoder.dim == policy.config.vision_width
    assert np.isfinite(h).all()
    assert np.allclose(encoder(v[1:2]), h[1:2], atol=1e-5)  # one video's embedding does not depend on the batch
    with torch.no_grad():  # training the policy does not move the reward's encoder
        for p in policy.vision.parameters():
            p.add_(1.0)
    assert np.array_equal(encoder(v), h)


def test_a_state_policy_has_no_vision_encoder_to_copy():
    with pytest.raises(ConfigError, match="needs a policy with a camera.*--srpo.encoder=video"):
        build_encoder(SRPOConfig(encoder="policy_vision"), make_state_policy(), "agentview")


def test_video_encoder_saves_and_loads_exactly(tmp_path):
    torch.manual_seed(0)
    model = VideoEncoder(image_size=16, width=24).eval()
    path = tmp_path / "enc.safetensors"
    save_video_encoder(model, path)
    encoder = build_encoder(SRPOConfig(encoder="video", encoder_path=str(path)), make_state_policy(), "agentview")
    v = videos(t=5)
    with torch.no_grad():
        expected = model(torch.as_tensor(v)).double().numpy()
    assert encoder.dim == 24 and np.allclose(encoder(v), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="no video encoder there"):
        build_encoder(SRPOConfig(encoder="video", encoder_path=str(tmp_path / "none.safetensors")),
                      make_state_policy(), "agentview")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ConfigError, match="junk.safetensors: not a safetensors file"):
        load_video_encoder_via_config(tmp_path / "junk.safetensors")


def load_video_encoder_via_config(path):
    return build_encoder(SRPOConfig(encoder="video", encoder_path=str(path)), make_state_policy(), "agentview")


def test_vjepa2_loads_from_a_local_folder(tmp_path):
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(0)
    config = VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0, crop_size=32,
                          patch_size=16, frames_per_clip=4, tubelet_size=2, pred_hidden_size=32,
                          pred_num_hidden_layers=1, pred_num_attention_heads=2, pred_num_mask_tokens=2)
    model = VJEPA2Model(config).eval()
    folder = tmp_path / "vjepa2"
    model.save_pretrained(folder)
    encoder = build_encoder(SRPOConfig(encoder="vjepa2", encoder_path=str(folder), n_frames=4), make_state_policy(),
                            "agentview")
    v = videos(b=2, t=4, size=48)
    h = encoder(v)
    assert h.shape == (2, 32) and encoder.dim == 32 and np.isfinite(h).all()
    # the same numbers as the model itself on the preprocessed video
    x = torch.as_tensor(v).permute(0, 1, 4, 2, 3).reshape(8, 3, 48, 48).float() / 255
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(pixel_values_videos=((x - mean) / std).reshape(2, 4, 3, 32, 32), skip_predictor=True)
    assert np.allclose(h, ref.last_hidden_state.mean(1).double().numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="tubelets of 2"):
        build_encoder(SRPOConfig(encoder="vjepa2", encoder_path=str(folder), n_frames=5), make_state_policy(), "x")
    with pytest.raises(ConfigError, match="no config.json there"):
        build_encoder(SRPOConfig(encoder="vjepa2", encoder_path=str(tmp_path)), make_state_policy(), "x")


def test_train_world_model_learns_and_writes_a_loadable_encoder(tmp_path):
    from tests.data.helpers import random_episodes, write_dataset
    from vla.rl.srpo.train_world_model import train_world_model

    episodes = random_episodes(seed=0, lengths=(16, 14, 12))
    for e, episode in enumerate(episodes):  # a scene per episode, and a bar that moves across it with time
        scene = np.random.default_rng(e).integers(0, 120, (12, 16, 3), dtype=np.uint8)
        for t, (frame, _) in enumerate(episode):
            image = scene.copy()
            image[:, t % 16] = 255
            frame["observation.images.agentview"] = image
    data = write_dataset(tmp_path / "demos", episodes)
    out = tmp_path / "wm" / "encoder.safetensors"
    cfg = WorldModelConfig(datasets=[str(data)], output=str(out), image_size=16, width=16, clip_frames=3,
                           frame_stride=2, max_offset=1, steps=60, batch_size=8, lr=1e-3, image_shift=0,
                           num_threads=1)
    summary = train_world_model(cfg)
    assert summary["loss_last"] < summary["loss_first"]
    model = load_video_encoder(out)
    assert model.dim == 16 and not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match="already exists"):
        train_world_model(cfg)
    with pytest.raises(ConfigError, match=r"no camera 'front'.*agentview"):
        train_world_model(WorldModelConfig(datasets=[str(data)], output=str(tmp_path / "b.safetensors"),
                                           camera="front"))
    with pytest.raises(ConfigError, match="--datasets"):
        train_world_model(WorldModelConfig(output=str(tmp_path / "c.safetensors")))

"""What `vla rl --algo srpo` adds to a run before its first rollout: config checks, the camera its
frames come from (added to the env of a state policy, which otherwise renders nothing), the staged
dense reward for the correlation log, and the frozen encoder."""

from __future__ import annotations

from vla.config import ConfigError, SRPOConfig
from vla.policy.registry import load_policy
from vla.rl.srpo.encoders import ENCODERS, build_encoder
from vla.rl.srpo.progress import ProgressReward
from vla.rl.srpo.reward import FORMULAS

# The camera a state policy's trajectories are filmed with (robosuite's and LIBERO's front view).
STATE_POLICY_CAMERA = "agentview"


def validate_srpo(cfg) -> None:
    """Refuse a bad SRPO config (cfg an RLConfig) before anything loads; messages name the flag."""
    s = cfg.srpo
    if cfg.algo != "srpo":
        changed = [f"--srpo.{k}" for k, v in vars(s).items() if v != getattr(SRPOConfig(), k)]
        if changed:
            raise ConfigError(f"{', '.join(changed)}: SRPO's options; --algo {cfg.algo} does not use them")
        return
    if cfg.group_size < 2:
        raise ConfigError("--group_size must be >= 2 for SRPO (its advantages are GRPO's, normalised in a group)")
    if cfg.reward != "success":
        raise ConfigError(f"--reward={cfg.reward}: SRPO makes its own reward from the batch's successes and the world "
                          "model; the staged dense reward is only logged (--srpo.dense_correlation)")
    if s.encoder not in ENCODERS:
        raise ConfigError(f"--srpo.encoder: {s.encoder!r} is not one of {', '.join(ENCODERS)}")
    if s.encoder != "policy_vision" and not s.encoder_path:
        raise ConfigError(f"--srpo.encoder={s.encoder} needs --srpo.encoder_path (video: the file `vla "
                          "train-world-model` wrote; vjepa2: a local model folder)")
    if s.reward_formula not in FORMULAS:
        raise ConfigError(f"--srpo.reward_formula: {s.reward_formula!r} is not one of {', '.join(FORMULAS)}")
    for name, low in (("n_frames", 1), ("dbscan_min_samples", 1), ("encode_batch", 1), ("embedding_dim", 0)):
        if getattr(s, name) < low:
            raise ConfigError(f"--srpo.{name} must be >= {low}, got {getattr(s, name)}")
    if not s.dbscan_eps > 0:
        raise ConfigError(f"--srpo.dbscan_eps must be > 0, got {s.dbscan_eps}")


def frame_camera(srpo: SRPOConfig, policy) -> str:
    """The camera whose frames are embedded: srpo.camera, else the policy's first, else agentview."""
    return srpo.camera or (policy.config.cameras[0] if policy.config.cameras else STATE_POLICY_CAMERA)


def prepare_srpo(cfg, policy, env_kwargs: dict) -> tuple[dict, str, ProgressReward]:
    """(env kwargs with the frame camera and, for the correlation log, the dense reward; the frame camera;
    the progress reward with its frozen encoder, copied or loaded once for the whole run)."""
    camera = frame_camera(cfg.srpo, policy)
    env_kwargs = dict(env_kwargs)
    if camera not in env_kwargs["cameras"]:
        # The env renders its cameras at reset and after each chunk only: exactly the chunk boundaries.
        env_kwargs["cameras"] = tuple(env_kwargs["cameras"]) + (camera,)
    dense = cfg.srpo.dense_correlation and "/" not in cfg.env.task  # LIBERO tasks have no staged reward
    if dense:
        env_kwargs["reward_shaping"] = True  # read only by the correlation log; the update uses SRPO's reward
    # The world model stays the one the run started from: a resumed run's policy has trained on (RL moves the
    # vision tower too), so policy_vision copies the initial policy's tower, as the uninterrupted run did.
    initial = policy
    if cfg.resume and cfg.srpo.encoder == "policy_vision":
        initial = load_policy(cfg.policy, map_location=cfg.device)
    encoder = build_encoder(cfg.srpo, initial, camera)
    print(f"SRPO: progress reward from the {encoder.name} encoder ({encoder.dim}-d embeddings) of "
          f"{cfg.srpo.n_frames} {camera} frames per trajectory, {cfg.srpo.reward_formula} formula"
          + ("; logs its Spearman correlation with the staged dense reward" if dense else ""))
    return env_kwargs, camera, ProgressReward(encoder, cfg.srpo, dense_reward=dense)

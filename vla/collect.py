"""`vla collect`: scripted expert demonstrations written as a LeRobot v3.0 dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla.config import CollectConfig, write_resolved_config

STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_axis_angle_x", "eef_axis_angle_y", "eef_axis_angle_z",
               "gripper_qpos_left", "gripper_qpos_right"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "delta_axis_angle_x", "delta_axis_angle_y", "delta_axis_angle_z",
                "gripper"]


def dataset_features(cameras: list[str], image_size: int) -> dict:
    features = {
        f"observation.images.{cam}": {"dtype": "image", "shape": [image_size, image_size, 3],
                                      "names": ["height", "width", "channels"]}
        for cam in cameras
    }
    features["observation.state"] = {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": STATE_NAMES}
    features["action"] = {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": ACTION_NAMES}
    return features


def collect(cfg: CollectConfig, progress: bool = True) -> Path:
    from vla.data import LeRobotDatasetWriter
    from vla.sim import make_env, make_expert

    out = Path(cfg.output_dir)
    env = make_env(**cfg.env.env_kwargs())
    expert = make_expert(cfg.env.task, noise_std=cfg.expert_noise, seed=cfg.seed)
    writer = LeRobotDatasetWriter(out, fps=cfg.env.control_freq, robot_type="panda",
                                  features=dataset_features(cfg.env.cameras, cfg.env.image_size),
                                  overwrite=cfg.overwrite)
    from torch.utils.tensorboard import SummaryWriter

    # Logs sit beside the dataset (not inside it: the dataset folder holds only the format's files).
    log_dir = out.with_name(out.name + ".logs")
    tb = SummaryWriter(str(log_dir / "tb"))
    kept, tried, lengths = 0, 0, []
    bar = tqdm(total=cfg.num_episodes, desc="collect", disable=not progress, dynamic_ncols=True)
    try:
        with writer:
            while kept < cfg.num_episodes:
                if tried >= 3 * cfg.num_episodes:
                    raise RuntimeError(f"the {cfg.env.task} expert succeeded on only {kept} of {tried} episodes; "
                                       "lower collect.expert_noise or set collect.only_successful=false")
                obs, _ = env.reset(seed=cfg.seed + tried)
                expert.reset()
                tried += 1
                success, done, steps = False, False, 0
                while not done:
                    action = expert.act(env.privileged_state())
                    frame = {f"observation.images.{cam}": obs["images"][cam] for cam in cfg.env.cameras}
                    frame["observation.state"] = obs["state"].astype(np.float32)
                    frame["action"] = action.astype(np.float32)
                    writer.add_frame(frame, task=obs["task"])
                    obs, _, terminated, truncated, info = env.step(action)
                    success |= bool(info["is_success"])
                    done = terminated or truncated
                    steps += 1
                tb.add_scalar("collect/expert_success", float(success), tried)
                tb.add_scalar("collect/episode_steps", steps, tried)
                if success or not cfg.only_successful:
                    writer.save_episode()
                    lengths.append(steps)
                    kept += 1
                    bar.update(1)
                else:
                    writer.discard_episode()
            path = writer.finalize()
    finally:
        bar.close()
        tb.close()
        env.close()
    write_resolved_config(cfg, log_dir)
    summary = {"episodes": kept, "attempts": tried, "expert_success_rate": kept / tried if cfg.only_successful else None,
               "mean_length": float(np.mean(lengths)) if lengths else 0.0}
    print(f"collected {kept} episodes ({sum(lengths)} frames) in {tried} attempts; dataset written to {path}; "
          f"config and TensorBoard logs in {log_dir}")
    print(json.dumps(summary))
    return path

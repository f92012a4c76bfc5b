"""Typed run configurations for every `vla` command, parsed with draccus.

`--config FILE.yaml` gives the base values and dotted flags override them
(`--train.steps=100`). Errors name the key and the file. Every command writes
its resolved config next to its outputs (write_resolved_config).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import draccus

from vla.policy.config import PolicyConfig

T = TypeVar("T")


class ConfigError(ValueError):
    pass


@dataclass
class EnvConfig:
    task: str = "lift"
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    image_size: int = 64
    max_episode_steps: int = 200
    control_freq: int = 20

    def env_kwargs(self) -> dict:
        return dict(task=self.task, cameras=tuple(self.cameras), image_size=self.image_size,
                    max_episode_steps=self.max_episode_steps, control_freq=self.control_freq)


@dataclass
class CollectConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    output_dir: str = "outputs/demos/lift"
    num_episodes: int = 20
    # Demo seeds start here; evaluation uses a disjoint range (EvalConfig.seed).
    seed: int = 0
    # Gaussian noise on the expert's actions, for more varied demonstrations.
    expert_noise: float = 0.0
    # Keep only episodes the expert finished successfully.
    only_successful: bool = True
    overwrite: bool = False


@dataclass
class TrainConfig:
    dataset: str = "outputs/demos/lift"
    output_dir: str = "outputs/train/lift"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    # Random image shift in pixels (DrQ-style augmentation; 0 disables).
    image_shift: int = 4
    seed: int = 0
    log_every: int = 25
    save_every: int = 1000
    device: str = "cpu"
    # 0 lets torch decide.
    num_threads: int = 0


@dataclass
class EvalConfig:
    policy: str = "outputs/train/lift/policy"
    output_dir: str = "outputs/eval/lift"
    env: EnvConfig = field(default_factory=EnvConfig)
    n_episodes: int = 50
    n_envs: int = 2
    # Episode i starts from the initial state of seed + i.
    seed: int = 100_000
    n_videos: int = 3
    device: str = "cpu"
    # Override the policy's n_action_steps (actions executed per predicted chunk); 0 keeps it.
    n_action_steps: int = 0


@dataclass
class QuickstartConfig:
    output_dir: str = "outputs/quickstart"
    collect: CollectConfig = field(default_factory=CollectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def parse_config(cls: type[T], argv: list[str]) -> T:
    """Parse `--config FILE` plus dotted overrides into cls; errors name the key and the file."""
    argv = list(argv)
    config_path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config_path = argv[i + 1]
            del argv[i : i + 2]
            break
        if arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
            del argv[i]
            break
    source = f"config file {config_path}" if config_path else "command line"
    if config_path is not None and not Path(config_path).is_file():
        raise ConfigError(f"config file {config_path} does not exist")
    try:
        return draccus.parse(config_class=cls, config_path=config_path, args=argv)
    except SystemExit as exc:  # argparse exits on unknown flags after printing the reason
        raise ConfigError(f"bad command-line arguments {argv} for {cls.__name__} (see the message above)") from exc
    except Exception as exc:  # draccus raises several types; the message names the key
        raise ConfigError(f"{source}: {_explain(exc)}") from exc


def _explain(exc: BaseException) -> str:
    """draccus wraps errors raised in __post_init__; surface the innermost reason too."""
    messages, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if str(exc) and str(exc) not in messages:
            messages.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(reversed(messages)) if len(messages) > 1 else (messages[0] if messages else "invalid config")


def write_resolved_config(config, directory: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the fully resolved config (atomically) next to a run's outputs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_suffix(".yaml.tmp")
    with open(tmp, "w") as f:
        draccus.dump(config, f)
    tmp.replace(path)
    return path


def resolve_threads(num_threads: int) -> None:
    import torch

    if num_threads > 0:
        torch.set_num_threads(num_threads)


def print_err(msg: str) -> None:
    print(msg, file=sys.stderr)

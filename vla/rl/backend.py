"""Where `vla rl`'s env workers run (--backend): local worker processes or Ray actors.

Both give a vector env with VectorEnv's interface, so the rollout engine, the algorithms and the eval
runner do not know which one they drive. This module only checks the backend flags and builds the
factory the trainer calls.
"""

from __future__ import annotations

from typing import Callable

from vla.config import ConfigError, RLConfig
from vla.sim.ray_vector_env import LOST_EPISODES, SCHEDULING

PLACEMENTS = ("driver", "worker")  # --ray_inference: where the rollouts' policy runs (vla/rl/ray_rollout.py)

BACKENDS = ("local", "ray")


def validate_backend(cfg: RLConfig) -> None:
    """Refuse bad backend flags before anything starts; messages name the flag."""
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"--backend: {cfg.backend!r} is not one of {', '.join(BACKENDS)}")
    if cfg.lost_episodes not in LOST_EPISODES:
        raise ConfigError(f"--lost_episodes: {cfg.lost_episodes!r} is not one of {', '.join(LOST_EPISODES)}")
    if cfg.max_staleness < 0:
        raise ConfigError(f"--max_staleness must be >= 0, got {cfg.max_staleness}")
    if cfg.ray_inference not in PLACEMENTS:
        raise ConfigError(f"--ray_inference: {cfg.ray_inference!r} is not one of {', '.join(PLACEMENTS)}")
    if cfg.backend == "local" and cfg.ray_inference == "worker":
        raise ConfigError("--ray_inference worker needs --backend ray: the policy-holding rollout workers are Ray "
                          "actors; local worker processes only step envs, and the policy samples in this process")
    if cfg.backend == "local":
        set_flags = [f"--{name}" for name, default in (("ray_address", None), ("ray_resources", ""),
                                                       ("ray_gpus_per_worker", 0.0), ("lost_episodes", "drop"))
                     if getattr(cfg, name) != default]
        if set_flags:
            why = " (local workers drop a lost worker's episodes)" if "--lost_episodes" in set_flags else ""
            raise ConfigError(f"{' and '.join(set_flags)} {'needs' if len(set_flags) == 1 else 'need'} "
                              f"--backend ray{why}")
        return
    if cfg.ray_scheduling not in SCHEDULING:
        raise ConfigError(f"--ray_scheduling: {cfg.ray_scheduling!r} is not one of {', '.join(SCHEDULING)}")
    if not cfg.ray_cpus_per_worker >= 0:
        raise ConfigError(f"--ray_cpus_per_worker must be >= 0, got {cfg.ray_cpus_per_worker}")
    if not cfg.ray_gpus_per_worker >= 0:
        raise ConfigError(f"--ray_gpus_per_worker must be >= 0, got {cfg.ray_gpus_per_worker}")
    if cfg.ray_max_restarts < 0:
        raise ConfigError(f"--ray_max_restarts must be >= 0, got {cfg.ray_max_restarts}")
    from vla.sim.ray_connect import parse_address, parse_resources

    parse_resources(cfg.ray_resources)  # RayBackendError (a UserError) naming a malformed entry
    if cfg.ray_address is not None and cfg.ray_address != "auto":
        parse_address(cfg.ray_address)


def vec_env_factory(cfg: RLConfig) -> Callable[[int, dict], object]:
    """``factory(n_envs, env_kwargs)`` -> the vector env of cfg.backend (a context manager)."""
    if cfg.backend == "ray":
        from vla.sim.ray_connect import parse_resources
        from vla.sim.ray_env_worker import EnvWorker
        from vla.sim.ray_vector_env import RayVectorEnv

        resources = parse_resources(cfg.ray_resources)
        worker_cls = EnvWorker
        if cfg.ray_inference == "worker":  # the actors hold a policy copy too (vla/rl/ray_rollout.py)
            from vla.rl.ray_rollout import RolloutWorker as worker_cls
        return lambda n_envs, env_kwargs: RayVectorEnv(
            n_envs, env_kwargs, envs_per_worker=cfg.envs_per_worker, address=cfg.ray_address,
            lost_episodes=cfg.lost_episodes, cpus_per_worker=cfg.ray_cpus_per_worker,
            max_restarts=cfg.ray_max_restarts, scheduling=cfg.ray_scheduling, resources=resources,
            gpus_per_worker=cfg.ray_gpus_per_worker, worker_cls=worker_cls)
    from vla.sim import VectorEnv

    return lambda n_envs, env_kwargs: VectorEnv(n_envs, env_kwargs, envs_per_worker=cfg.envs_per_worker)


def rollout_engine(cfg: RLConfig, policy, vec_env, sampling, noise_head=None, value_head=None,
                   frame_camera: str | None = None, version: int = 0):
    """The rollout engine of --ray_inference: the driver's RolloutEngine (one batched policy call for all envs
    in this process), or the Ray workers' (vla/rl/ray_rollout.py: each actor samples its envs' decisions
    with its own policy copy, holding the weights of ``version``; the trainer pushes each update's)."""
    if cfg.ray_inference == "worker":
        from vla.rl.ray_rollout import WorkerRolloutEngine

        return WorkerRolloutEngine(policy, vec_env, sampling, noise_head, value_head, frame_camera,
                                   seed=cfg.seed, version=version)
    from vla.rl.rollout import RolloutEngine

    return RolloutEngine(policy, vec_env, sampling, noise_head, value_head, frame_camera=frame_camera)

"""Exact-resumable checkpoints of an off-policy steering run (`vla rl --algo noise|residual|zprl`).

A checkpoint is taken between two decisions, right after an episode ended and its last transition was
stored and trained on, so nothing of the simulator's mid-episode state needs saving: the next episode
restarts from its seed. Everything else that decides the numbers is saved without pickle:

    sac.safetensors        actor, critics, target critics, log entropy coefficient, the three Adam states
    replay.safetensors     the replay buffer's filled part
    rng.safetensors        torch's CPU RNG and the env's noise generator (vla/train/checkpoint.py)
    trainer_state.json     counters, the buffer's position, optimizer and numpy/python RNG metadata, the
                           warm-up generator, the next episode's seed, the monitor's episodes and history

SB3's own `save` pickles parts of the model and `save_replay_buffer` pickles the buffer, which this
project does not load from files, hence this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vla.policy.checkpoint import CheckpointError, atomic_directory_write
from vla.train.checkpoint import (FORMAT_VERSION, STATE_FILE, optimizer_state_join, optimizer_state_split,
                                  read_training_state, restore_rng, rng_state)

SAC_FILE, REPLAY_FILE, RNG_FILE = "sac.safetensors", "replay.safetensors", "rng.safetensors"
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
MONITOR_FIELDS = ("env_steps", "decisions", "next_eval", "next_save", "episodes", "history", "eval_seconds",
                  "elapsed_seconds", "train_cpu_seconds")


def _optimizers(agent) -> dict:
    return {"actor": agent.actor.optimizer, "critic": agent.critic.optimizer, "ent_coef": agent.ent_coef_optimizer}


def save_steering_checkpoint(directory: Path, agent, train_env, monitor, extra: dict) -> Path:
    """Write the run's state into `directory` atomically (a kill mid-save keeps the previous one)."""
    sac = {f"policy/{k}": v.detach().cpu().contiguous() for k, v in agent.policy.state_dict().items()}
    sac["log_ent_coef"] = agent.log_ent_coef.detach().cpu().contiguous()
    optimizers = {}
    for name, optimizer in _optimizers(agent).items():
        tensors, optimizers[name] = optimizer_state_split(optimizer)
        sac.update({f"optimizer/{name}/{k}": v for k, v in tensors.items()})
    buffer = agent.replay_buffer
    filled = buffer.buffer_size if buffer.full else buffer.pos
    replay = {name: torch.from_numpy(np.ascontiguousarray(getattr(buffer, name)[:filled])) for name in BUFFER_ARRAYS}
    rng_tensors, rng_meta = rng_state(train_env._generator)
    state = {
        "format_version": FORMAT_VERSION, **extra,
        "num_timesteps": int(agent.num_timesteps), "n_updates": int(agent._n_updates),
        "episode_num": int(agent._episode_num), "update_seconds": float(agent.update_seconds),
        "buffer": {"pos": int(buffer.pos), "full": bool(buffer.full), "size": int(buffer.buffer_size)},
        "optimizers": optimizers, "rng": rng_meta, "warmup_rng": agent.warmup_rng.bit_generator.state,
        # the episode that was reset but not yet played: the next run resets to the same seed
        "next_episode_seed": int(train_env.next_seed) - 1,
        "monitor": {name: getattr(monitor, name) for name in MONITOR_FIELDS},
    }

    def write(tmp: Path) -> None:
        save_file(sac, str(tmp / SAC_FILE))
        save_file(replay, str(tmp / REPLAY_FILE))
        save_file(rng_tensors, str(tmp / RNG_FILE))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))

    return atomic_directory_write(Path(directory), write)


def restore_steering_checkpoint(directory: Path, agent, train_env, monitor) -> dict:
    """Load a checkpoint into a freshly built agent, env and monitor (after everything is built:
    building draws from the global RNGs). Returns the trainer state."""
    directory = Path(directory)
    state = read_training_state(directory)  # the same file and format version as `vla train`'s
    try:
        sac = load_file(str(directory / SAC_FILE))
        replay = load_file(str(directory / REPLAY_FILE))
        rng_tensors = load_file(str(directory / RNG_FILE))
        agent.policy.load_state_dict({k[len("policy/"):]: v for k, v in sac.items() if k.startswith("policy/")})
        with torch.no_grad():
            agent.log_ent_coef.copy_(sac["log_ent_coef"])
        for name, optimizer in _optimizers(agent).items():
            prefix = f"optimizer/{name}/"
            tensors = {k[len(prefix):]: v for k, v in sac.items() if k.startswith(prefix)}
            optimizer.load_state_dict(optimizer_state_join(tensors, state["optimizers"][name]))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{directory}: cannot restore the learner (was it trained with other --offpolicy "
                              f"network or buffer settings?): {exc}") from exc
    buffer = agent.replay_buffer
    if state["buffer"]["size"] != buffer.buffer_size:
        raise CheckpointError(f"{directory}: its replay buffer holds {state['buffer']['size']} decisions, this run "
                              f"asks for --offpolicy.buffer_size={buffer.buffer_size}")
    for name in BUFFER_ARRAYS:
        values = replay[name].numpy()
        target = getattr(buffer, name)
        if values.shape[1:] != target.shape[1:]:
            raise CheckpointError(f"{directory}: replay {name} has shape {tuple(values.shape[1:])} per entry, this "
                                  f"run's space needs {tuple(target.shape[1:])}")
        target[: len(values)] = values
    buffer.pos, buffer.full = state["buffer"]["pos"], state["buffer"]["full"]
    agent.num_timesteps, agent._n_updates = state["num_timesteps"], state["n_updates"]
    agent._episode_num, agent.update_seconds = state["episode_num"], state["update_seconds"]
    agent.warmup_rng.bit_generator.state = state["warmup_rng"]
    restore_rng(rng_tensors, state["rng"], train_env._generator)
    train_env.next_seed = state["next_episode_seed"]
    agent.env.seed(state["next_episode_seed"])  # SB3 resets before its first decision: to this seed
    for name in MONITOR_FIELDS:
        if name in state["monitor"]:  # checkpoints from before the CPU meter lack train_cpu_seconds
            setattr(monitor, name, state["monitor"][name])
    return state

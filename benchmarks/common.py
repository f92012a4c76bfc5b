"""Shared bits for benchmark scripts: machine description and result files."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}"


def header(title: str) -> str:
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    today = datetime.date.today().isoformat()
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"
    return f"## {title}\n\nMachine: {machine()}. Date: {today}. Commit: {rev}. Command: `{cmd}`\n"


def write_json(path: str | Path, args, **fields) -> Path:
    """Write a script's results as JSON (the machine and its arguments first), atomically."""
    import json

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"machine": machine(), "args": vars(args), **fields}, indent=1))
    tmp.replace(path)
    return path


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(text)
    print(f"written to {path}")
    return path


def run_vla(args: list[str]) -> None:
    """Run one `vla` subcommand in this process; a non-zero exit stops the script with the command."""
    from vla.cli import main as vla

    rc = vla(args)
    if rc != 0:
        raise SystemExit(f"`vla {' '.join(args)}` failed with exit code {rc}")


def evaluated(policy: str | Path, out: Path, task: str, max_steps: int, episodes: int = 50, n_envs: int = 1,
              n_videos: int = 0, camera_args: tuple[str, ...] = ("--env.cameras=[]",)) -> dict:
    """`vla eval` of a policy on the fixed evaluation states (a LIBERO task: its suite's), run once: its
    eval_info.json is reused when `out` already holds one (killed benchmarks pick up where they stopped).
    camera_args: none for a state policy; a pixel policy passes its cameras and image size."""
    import json

    out = Path(out)
    suite, _, index = task.partition("/")
    # A LIBERO task by its protocol (episode i from the suite's fixed state i), not env.task's seeded draw.
    where = [f"--suite={suite}", f"--task_ids=[{index}]"] if index.isdigit() else [f"--env.task={task}"]
    if not (out / "eval_info.json").exists():
        run_vla(["eval", f"--policy={policy}", f"--output_dir={out}", *where, *camera_args,
                 f"--env.max_episode_steps={max_steps}", f"--n_episodes={episodes}", f"--n_envs={n_envs}",
                 f"--n_videos={n_videos}", "--overwrite=true"])
    return json.loads((out / "eval_info.json").read_text())


def untrained_policy(state: bool, n_action_steps: int):
    """A randomly initialised policy with unit normalisation, for timing only: the state_flow policy on
    Lift's 8 + 10 state dims (state=True) or the tiny pixel VLA; 7-D actions, chunks of 16."""
    import torch

    from vla.policy.config import PolicyConfig
    from vla.policy.registry import policy_class

    def unit(d):
        return {"mean": torch.zeros(d), "std": torch.ones(d), "min": -torch.ones(d), "max": torch.ones(d)}

    torch.manual_seed(0)
    if state:
        config = PolicyConfig(type="state_flow", environment_state_dim=10, chunk_size=16,
                              n_action_steps=n_action_steps)
    else:
        config = PolicyConfig(preset="tiny", chunk_size=16, n_action_steps=n_action_steps)
    policy = policy_class(config.type)(config)
    stats = {"observation.state": unit(8), "action": unit(7)}
    if state:
        stats["observation.environment_state"] = unit(10)
    policy.normalizer.load_stats(stats)
    return policy

"""The `vla` command: one entry point, one sub-command per job.

Each sub-command takes `--config FILE.yaml` plus dotted overrides (`--train.steps=100`),
parsed into the typed configs of vla.config. Heavy modules (torch, transformers, MuJoCo)
are imported only after the arguments parse, so `--help` and argument errors answer fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Command:
    summary: str
    config: str  # the config class's name in vla.config
    run: Callable[[Any], None]  # gets the parsed config; imports what it needs itself
    kept: Callable[[Any], str]  # what an interrupted run leaves behind, in words


def _collect(cfg) -> None:
    from vla.collect import collect

    collect(cfg)


def _train(cfg) -> None:
    from vla.train.sft import train

    train(cfg)


def _eval(cfg) -> None:
    from vla.eval.evaluate import run_eval

    run_eval(cfg)


def _quickstart(cfg) -> None:
    from vla.quickstart import run_quickstart

    run_quickstart(cfg)


def _rl(cfg) -> None:
    from vla.policy.steered.spaces import SPACES

    if cfg.algo in SPACES:  # off-policy steering of the frozen policy
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from vla.config import ConfigError

            raise ConfigError(f"--algo {cfg.algo}: the off-policy steering learners do not run data-parallel; "
                              "run them as one process (without torchrun)")
        if cfg.ray_inference != "driver":
            from vla.config import ConfigError

            raise ConfigError(f"--ray_inference {cfg.ray_inference}: the off-policy steering learners run their envs in "
                              "local worker processes and sample in this process; leave --ray_inference at driver")
        from vla.rl.steering.trainer import train_steering

        train_steering(cfg)
        return
    from vla.rl.trainer import train_rl

    train_rl(cfg)


def _train_world_model(cfg) -> None:
    from vla.rl.srpo.train_world_model import train_world_model

    train_world_model(cfg, progress=True)


def _serve_ros(cfg) -> None:
    import dataclasses

    from vla.real_robot.ros_serve import serve_ros

    serve_ros(**dataclasses.asdict(cfg))


def _sim_arm(cfg) -> None:
    import dataclasses

    from vla.real_robot.ros_serve import run_sim_arm

    run_sim_arm(**dataclasses.asdict(cfg))


def _ros_bringup(cfg) -> None:
    from vla.real_robot.bringup import run_bringup

    code = run_bringup(cfg)
    if code:
        raise SystemExit(code)  # a process died or would not stop: the reason is logged above


def _serve_policy(cfg) -> None:
    import dataclasses

    from vla.real_robot.serve_policy import serve_policy

    serve_policy(**dataclasses.asdict(cfg))


def _export(cfg) -> None:
    from vla.export import run_export

    run_export(cfg)


def _checkpoint_kept(directory: str, resume_hint: str) -> str:
    last = Path(directory) / "checkpoints" / "last"
    if last.is_dir():
        return f"the last checkpoint is kept in {last}; {resume_hint}"
    return "no checkpoint had been written yet, nothing kept"


def _dataset_kept(cfg) -> str:
    return (f"no dataset written ({cfg.output_dir} is written only when collection finishes; an older one there "
            f"is untouched); the partial TensorBoard logs are in {cfg.output_dir}.logs")


def _quickstart_kept(cfg) -> str:
    done = [name for name, marker in (("demos", "demos/meta/info.json"), ("training", "train/policy/config.json"),
                                      ("evaluation", "eval/eval_info.json")) if (Path(cfg.output_dir) / marker).exists()]
    return f"finished stages kept in {cfg.output_dir}: {', '.join(done)}" if done else "no stage had finished, nothing kept"


COMMANDS: dict[str, Command] = {
    "collect": Command("scripted expert demonstrations -> LeRobot v3.0 dataset", "CollectConfig", _collect,
                       _dataset_kept),
    "train": Command("supervised flow-matching training of a policy on a dataset", "TrainConfig", _train,
                     lambda c: _checkpoint_kept(c.output_dir, "continue with --resume=true")),
    "eval": Command("evaluate a policy checkpoint: success table, eval_info.json, plot, videos", "EvalConfig", _eval,
                    lambda c: "nothing kept: results are written only when every episode has finished"),
    "quickstart": Command("collect + train + eval (+ optional RL) on the default config: the whole main job",
                          "QuickstartConfig", _quickstart, _quickstart_kept),
    "rl": Command("RL post-training of a flow policy in simulation (GRPO, PPO, SRPO; SAC steering: noise, residual, zprl)", "RLConfig", _rl,
                  lambda c: _checkpoint_kept(c.output_dir, "continue with --resume=true")),
    "train-world-model": Command("train SRPO's small video encoder self-supervised on dataset frames "
                                 "(for `vla rl --algo srpo --srpo.encoder=video`)", "WorldModelConfig",
                                 _train_world_model, lambda c: f"nothing kept: {c.output} is written when training ends"),
    "serve-ros": Command("run a policy on an arm through ROS 2 (needs the [ros] extra)", "ServeRosConfig", _serve_ros,
                         lambda c: "node stopped"),
    "sim-arm": Command("a MuJoCo simulated arm on the robot's ROS 2 topics (needs the [ros] extra)", "SimArmConfig",
                       _sim_arm, lambda c: "simulated arm stopped"),
    "ros-bringup": Command("sim-arm and serve-ros together from one config, stopped together (a launch file)",
                           "RosBringupConfig", _ros_bringup, lambda c: "both processes stopped"),
    "export": Command("write a policy checkpoint in lerobot's format (`--format lerobot`: pi0 / pi05 / smolvla)",
                      "ExportConfig", _export,
                      lambda c: f"nothing kept: {c.output} is written only when the export finishes"),
    "serve-policy": Command("serve a policy checkpoint over websockets for `serve-ros --policy ws://HOST:PORT`",
                            "ServePolicyConfig", _serve_policy, lambda c: "server stopped"),
}
BENCH_SUMMARY = "benchmarks: `vla bench kernels` (fused kernels against torch eager / compile)"


def usage() -> str:
    rows = [(name, c.summary) for name, c in COMMANDS.items()] + [("bench", BENCH_SUMMARY)]
    width = max(13, max(len(name) for name, _ in rows) + 2)
    return "\n".join(["usage: vla <command> [--config FILE.yaml] [--key.sub=value ...]", "", "commands:"]
                     + [f"  {name:<{width}}{summary}" for name, summary in rows]
                     + ["", "`vla <command> --help` lists a command's options with their descriptions and defaults."])


def _bench(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: vla bench kernels [options]\n\n{BENCH_SUMMARY}\n`vla bench kernels --help` lists its options.")
        return 0
    if argv[0] != "kernels":
        print(f"vla bench: unknown benchmark {argv[0]!r}; valid: kernels", file=sys.stderr)
        return 2
    from vla.kernels.benchmark import main

    main(argv[1:])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "bench":
        return _bench(rest)
    if name not in COMMANDS:
        print(f"vla: unknown command {name!r}; valid commands: {', '.join([*COMMANDS, 'bench'])}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    import vla.config
    from vla.errors import UserError

    config_cls = getattr(vla.config, command.config)
    if "-h" in rest or "--help" in rest:
        from vla.cli_help import format_help

        print(format_help(name, command.summary, config_cls))
        return 0
    cfg = None
    try:
        cfg = vla.config.parse_config(config_cls, rest, command=name)
        command.run(cfg)
    except UserError as exc:
        print(f"vla {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = command.kept(cfg) if cfg is not None else "nothing started"
        print(f"\nvla {name}: interrupted; {kept}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

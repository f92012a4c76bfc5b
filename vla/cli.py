"""The `vla` command: one entry point, one sub-command per job.

Each sub-command takes `--config configs/....yaml` plus dotted overrides
(`--train.steps=100`), parsed into the typed configs of vla.config.
"""

from __future__ import annotations

import os
import sys

USAGE = """usage: vla <command> [--config FILE.yaml] [--key.sub=value ...]

commands:
  collect      scripted expert demonstrations -> LeRobot v3.0 dataset
  train        supervised flow-matching training on a dataset
  eval         evaluate a policy checkpoint: success table, eval_info.json, plot, videos
  quickstart   collect + train + eval on the default config (the whole main job)
  rl           RL post-training of a policy in simulation: `vla rl --algo grpo|ppo --policy PATH --task lift`
  rl           RL post-training (GRPO, PPO) of a policy in simulation
  serve-ros    run a policy on an arm through ROS 2 (needs the [ros] extra)
  sim-arm      a MuJoCo simulated arm on the same ROS 2 topics (needs the [ros] extra)
  serve-policy serve a policy checkpoint over websockets for `serve-ros --policy ws://HOST:PORT`
  bench        benchmarks: `vla bench kernels`

`vla <command> --help` lists a command's options."""


def _collect(argv):
    from vla.collect import collect
    from vla.config import CollectConfig, parse_config

    collect(parse_config(CollectConfig, argv))


def _train(argv):
    from vla.config import TrainConfig, parse_config
    from vla.train.sft import train

    train(parse_config(TrainConfig, argv))


def _eval(argv):
    from vla.config import EvalConfig, parse_config
    from vla.eval.evaluate import run_eval

    run_eval(parse_config(EvalConfig, argv))


def _quickstart(argv):
    from vla.config import QuickstartConfig, parse_config
    from vla.quickstart import run_quickstart

    run_quickstart(parse_config(QuickstartConfig, argv))


def _rl(argv):
    from vla.config import RLConfig, parse_config
    from vla.rl.losses import NonFiniteError
    from vla.rl.trainer import train_rl

    try:
        train_rl(parse_config(RLConfig, argv))
    except NonFiniteError as exc:
        raise SystemExit(f"vla rl: stopped: {exc}") from exc


def _bench(argv):
    if not argv or argv[0] != "kernels":
        raise SystemExit("usage: vla bench kernels [options]   (`vla bench kernels --help` lists them)")
    from vla.kernels.benchmark import main

    main(argv[1:])


def _serve_ros(argv):
    import dataclasses

    from vla.config import ServeRosConfig, parse_config
    from vla.real_robot.ros_serve import serve_ros

    serve_ros(**dataclasses.asdict(parse_config(ServeRosConfig, argv)))


def _sim_arm(argv):
    import dataclasses

    from vla.config import SimArmConfig, parse_config
    from vla.real_robot.ros_serve import run_sim_arm

    run_sim_arm(**dataclasses.asdict(parse_config(SimArmConfig, argv)))


def _serve_policy(argv):
    import dataclasses

    from vla.config import ServePolicyConfig, parse_config
    from vla.real_robot.serve_policy import serve_policy

    serve_policy(**dataclasses.asdict(parse_config(ServePolicyConfig, argv)))


COMMANDS = {"collect": _collect, "train": _train, "eval": _eval, "quickstart": _quickstart, "rl": _rl,
            "serve-ros": _serve_ros, "sim-arm": _sim_arm, "serve-policy": _serve_policy, "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"vla: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from vla.config import ConfigError
    from vla.policy.checkpoint import CheckpointError

    user_errors: tuple[type[BaseException], ...] = (ConfigError, CheckpointError)
    try:  # the dataset layer needs pyarrow, which an evaluation-only install does not have
        from vla.data.errors import DatasetError

        user_errors += (DatasetError,)
    except ImportError:
        pass
    from vla.real_robot.robot_config import RobotConfigError
    from vla.real_robot.ros_env import RosUnavailableError

    user_errors += (RobotConfigError, RosUnavailableError)
    try:
        COMMANDS[command](rest)
    except user_errors as exc:
        print(f"vla {command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

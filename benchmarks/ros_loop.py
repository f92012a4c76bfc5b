"""Timing of the ROS 2 loop over DDS on loopback: sim arm (own process) <-> policy node.

Measures, with a zero-cost stand-in policy so only the bridge is timed (inference excluded), or with
a real checkpoint (`--policy DIR`: the node's own inference thread runs it on the images and joint
states the sim arm publishes, end-effector actions through the Panda kinematics, as `vla serve-ros`):
- added latency = joint-state stamp -> node callback, + control tick (wake-up -> publish
  returned), + command stamp -> sim arm callback; p50 / p99 of each and of the sum of p99s;
- control period jitter: |period between wake-ups - nominal|, p50 / p99 / max;
- time to hold after observations stop: last joint-state stamp -> first stale-observation hold.

Variants (interleaved in one invocation, so their ratios share the machine's load):
  baseline   rclpy SingleThreadedExecutor, Python's default 5 ms GIL switch interval, normal priority
  gil        sys.setswitchinterval(0.5 ms): a thread waking up waits at most that long for the GIL
  events     rclpy's EventsExecutor (callbacks dispatched from C++) in both processes
  rt         the node's control thread at SCHED_FIFO 10, its callback thread at 9 (needs CAP_SYS_NICE)
  rt_gil     rt, and the GIL switch interval at 0.5 ms: the real-time thread then waits at most
             that long for a Python thread holding the GIL (what `vla serve-ros --realtime_priority` does)
  rt_arm     rt_gil, and the sim arm's physics and callback threads at SCHED_FIFO 10 (physics then
             competes with the node at equal priority on 2 cores: shown for the record)
  rt_dds     rt_gil, and Fast DDS's own threads in both processes at SCHED_FIFO 10
             (set_dds_threads_realtime), the arm's callback thread too
Usage: python benchmarks/ros_loop.py [--seconds 8] [--rates 50 100] [--variants baseline rt] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PANDA = ROOT / "configs" / "robot" / "panda.yaml"


_BASE = dict(executor="single_threaded", switch_interval_s=None, realtime_priority=0, arm_realtime_priority=0,
             dds_realtime_priority=0)
VARIANTS = {
    "baseline": _BASE,
    "gil": {**_BASE, "switch_interval_s": 0.0005},
    "events": {**_BASE, "executor": "events"},
    "rt": {**_BASE, "realtime_priority": 10},
    "rt_gil": {**_BASE, "realtime_priority": 10, "switch_interval_s": 0.0005},
    "rt_arm": {**_BASE, "realtime_priority": 10, "switch_interval_s": 0.0005, "arm_realtime_priority": 10},
    "rt_dds": {**_BASE, "realtime_priority": 10, "switch_interval_s": 0.0005, "dds_realtime_priority": 10},
}


def _sim_arm_process(config_path: str, domain_id: int, stats_path: str, executor: str,
                     switch_interval_s: float | None, realtime_priority: int, dds_priority: int) -> None:
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from vla.real_robot.robot_config import load_robot_config
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    prepare_ros_environment(domain_id, localhost_only=True)
    rclpy = import_rclpy()
    from vla.real_robot.sim_arm import SimArmNode

    from vla.real_robot.node_threads import set_dds_threads_realtime

    context = rclpy.Context()
    rclpy.init(context=context)
    arm = SimArmNode(load_robot_config(config_path), context=context, executor=executor,
                     realtime_priority=realtime_priority)
    if dds_priority > 0:
        arm.threads.priorities["spin"] = dds_priority  # commands are received in the callback thread
        set_dds_threads_realtime(dds_priority, arm.rlog)
    arm.start()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    while not stopping:
        time.sleep(0.05)
    stats = list(arm.command_transport_s)
    arm.close()
    rclpy.shutdown(context=context)
    tmp = stats_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.replace(tmp, stats_path)


class WigglePolicy:
    """Joint targets: the observed joints plus a slow wiggle; the gripper alternates each second.

    inference_s: time each call sleeps, the GIL released (as torch releases it for most of its
    compute): 0 runs inference back to back on every joint state, a worst case for GIL contention.
    """

    def __init__(self, inference_s: float = 0.0) -> None:
        self.inference_s = inference_s

    def predict_action_chunk(self, batch):
        if self.inference_s > 0:
            time.sleep(self.inference_s)
        q = np.asarray(batch["state"], dtype=np.float64)
        phase = time.time()
        grip = 1.0 if int(phase) % 2 else -1.0
        rows = [np.append(q + 0.05 * np.sin(phase + 0.05 * k), grip) for k in range(1, 11)]
        return np.stack(rows)[None]


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if len(values) else float("nan")


def run(rate_hz: float, seconds: float, variant: str = "baseline", inference_ms: float = 0.0,
        policy: str | None = None) -> dict:
    settings = VARIANTS[variant]
    default_switch = sys.getswitchinterval()
    if settings["switch_interval_s"] is not None:
        sys.setswitchinterval(settings["switch_interval_s"])
    try:
        return _run(rate_hz, seconds, variant, settings, inference_ms, policy)
    finally:
        sys.setswitchinterval(default_switch)


def _run(rate_hz: float, seconds: float, variant: str, settings: dict, inference_ms: float,
         policy: str | None) -> dict:
    from vla.real_robot.robot_config import load_robot_config
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    raw = yaml.safe_load(PANDA.read_text())
    raw["control_rate_hz"] = rate_hz
    raw["trajectory_stamp"] = "now"  # stamped, so the sim arm can measure command transport
    raw["max_observation_age_s"] = 0.25  # images come at 10 Hz from a CPU renderer
    tmpdir = Path(tempfile.mkdtemp(prefix="ros_loop_"))
    config_path = tmpdir / "robot.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_robot_config(config_path)
    domain_id = random.randint(100, 200)
    stats_path = str(tmpdir / "arm_stats.json")
    arm = mp.get_context("spawn").Process(target=_sim_arm_process, args=(
        str(config_path), domain_id, stats_path, settings["executor"], settings["switch_interval_s"],
        settings["arm_realtime_priority"], settings["dds_realtime_priority"]))
    arm.start()

    prepare_ros_environment(domain_id, localhost_only=True)
    rclpy = import_rclpy()
    from std_msgs.msg import String

    from vla.real_robot.ros_kinematics import JointActionBridge
    from vla.real_robot.ros_node import COMMAND_QOS, PolicyNode, PolicyNodeOptions

    context = rclpy.Context()
    rclpy.init(context=context)
    options = PolicyNodeOptions(executor=settings["executor"], realtime_priority=settings["realtime_priority"])
    if policy is None:
        node = PolicyNode(config, WigglePolicy(inference_ms / 1e3), JointActionBridge(7, 20.0, rate_hz),
                          options=options, context=context, batch_builder=lambda obs, cams: obs)
    else:  # what `vla serve-ros --policy DIR` builds: the real policy, bridge and safety layer
        from vla.real_robot.ros_serve import check_policy_fits, load_policy, make_bridge, policy_shape, workspace_check
        from vla.real_robot.safety import SafetyLayer

        model = load_policy(policy)
        bridge, kinematics = make_bridge(config, "end_effector_delta", 20.0)
        check_policy_fits(config, bridge, policy_shape(model))
        safety = SafetyLayer(config, forward_kinematics=workspace_check(config, kinematics))
        batch_builder = None
        if policy.startswith(("ws://", "wss://")):  # inference in another process (`vla serve-policy`)
            from vla.real_robot.policy_client import numpy_batch

            batch_builder = numpy_batch
        node = PolicyNode(config, model, bridge, options=options, safety=safety, context=context,
                          batch_builder=batch_builder)
    if settings["dds_realtime_priority"] > 0:
        from vla.real_robot.node_threads import set_dds_threads_realtime

        set_dds_threads_realtime(settings["dds_realtime_priority"], node.rlog)
    node.start()
    pub = node.create_publisher(String, config.topics.instruction, COMMAND_QOS)
    try:
        deadline = time.monotonic() + 60
        # a not-enabled hold is only counted once an observation is in (safety.py checks that first); whether
        # the node ever ticked before the first observation depends on how long the policy took to load
        while node.safety.counts["not_enabled"] == 0:
            if time.monotonic() > deadline or not arm.is_alive():
                raise RuntimeError("the sim arm's observations never reached the node (arm alive: "
                                   f"{arm.is_alive()}, safety counts: {dict(node.safety.counts)})")
            time.sleep(0.05)
        instruction = "wiggle" if policy is None else "lift the red cube"
        pub.publish(String(data=instruction))
        time.sleep(0.2)
        pub.publish(String(data=instruction))
        node.safety.enable()
        time.sleep(1.0)  # settle
        for d in (node.tick_starts, node.tick_compute_s, node.obs_transport_s):
            d.clear()
        time.sleep(seconds)
        ticks = np.diff(np.array(node.tick_starts))
        compute, transport = list(node.tick_compute_s), list(node.obs_transport_s)
        stale_before = node.safety.counts["stale_observation"]
        published = node.commands_published
        # Stop the observations: the arm process ends; time until the first stale hold.
        os.kill(arm.pid, signal.SIGTERM)
        last_stamp = None
        hold_at = None
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if node.safety.counts["stale_observation"] > stale_before:
                hold_at = time.time()
                break
            time.sleep(0.0005)
        with node._lock:
            last_stamp = node._joints[2]
        arm.join(20)
        command_transport = json.loads(Path(stats_path).read_text()) if Path(stats_path).exists() else []
    finally:
        node.close()
        rclpy.shutdown(context=context)
        if arm.is_alive():
            arm.kill()
    period = 1.0 / rate_hz
    jitter = np.abs(ticks - period)
    return {
        "variant": variant,
        "inference_ms": inference_ms,
        "policy": policy,
        "inference_ms_p50_p99": [pct(list(node.inference_s), 50), pct(list(node.inference_s), 99)],
        "rate_hz": rate_hz,
        "load_average_1min": os.getloadavg()[0],
        "ticks": int(len(ticks)),
        "commands_published": published,
        "stale_holds_during_run": stale_before,
        "jitter_ms": {"p50": pct(jitter, 50), "p99": pct(jitter, 99), "max": pct(jitter, 100)},
        "obs_transport_ms": {"p50": pct(transport, 50), "p99": pct(transport, 99)},
        "tick_compute_ms": {"p50": pct(compute, 50), "p99": pct(compute, 99)},
        "command_transport_ms": {"p50": pct(command_transport, 50), "p99": pct(command_transport, 99)},
        "added_latency_p99_sum_ms": pct(transport, 99) + pct(compute, 99) + pct(command_transport, 99),
        "hold_after_obs_stop_ms": None if hold_at is None else (hold_at - last_stamp) * 1e3,
        "max_observation_age_ms": config.max_observation_age_s * 1e3,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[50.0, 100.0])
    parser.add_argument("--variants", nargs="+", default=["baseline"], choices=sorted(VARIANTS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--inference-ms", type=float, default=0.0,
                        help="stand-in inference time (sleeps, GIL released); 0: back to back")
    parser.add_argument("--policy", help="a real policy instead of the stand-in (end-effector actions): a checkpoint "
                        "folder (inference in the node's process) or ws://HOST:PORT of `vla serve-policy` (its own)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    for rate in [r for r in args.rates for _ in range(args.repeats)]:
        for variant in args.variants:  # interleaved, so each pair of variants sees similar load
            results.append(run(rate, args.seconds, variant, args.inference_ms, args.policy))
            r = results[-1]
            print(f"{variant:>8} {rate:5.0f} Hz  jitter p50/p99/max {r['jitter_ms']['p50']:.2f}/"
                  f"{r['jitter_ms']['p99']:.2f}/{r['jitter_ms']['max']:.2f} ms  added latency p99 sum "
                  f"{r['added_latency_p99_sum_ms']:.2f} ms  inference p50/p99 {r['inference_ms_p50_p99'][0]:.1f}/"
                  f"{r['inference_ms_p50_p99'][1]:.1f} ms  hold {r['hold_after_obs_stop_ms']} ms  "
                  f"load {r['load_average_1min']:.2f}", file=sys.stderr, flush=True)
            if args.json:  # after every run: a long session that dies keeps what it measured
                args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

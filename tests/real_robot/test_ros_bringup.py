"""`vla ros-bringup` as a user runs it: one command starts the sim arm and the policy node (a tiny
checkpoint), joint states and commands flow over Fast DDS in a private domain, and SIGTERM stops
both processes; when one dies on its own the other is stopped and the bringup exits non-zero.
Bad configs are refused before anything starts."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

try:
    from vla.real_robot.ros_env import import_rclpy, prepare_ros_environment

    rclpy = import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

from dds_loop import PANDA, RECORD_QOS, call, wait_for  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tiny_checkpoint import save_tiny_policy  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla.cli import main  # noqa: E402
from vla.real_robot.robot_config import load_robot_config  # noqa: E402
from vla.real_robot.ros_node import COMMAND_QOS, SENSOR_QOS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ACTION_MEAN = [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # +x, close the gripper (test_ros_end_to_end.py)


class Watcher(Node):
    """Counts the arm's joint states and the node's commands."""

    def __init__(self, config, context) -> None:
        super().__init__("bringup_watcher", context=context)
        self._lock = threading.Lock()
        self.states: list[float] = []
        self.commands: list[float] = []
        self.create_subscription(JointState, config.topics.joint_states, lambda m: self._add(self.states), SENSOR_QOS)
        self.create_subscription(JointTrajectory, config.topics.joint_trajectory,
                                 lambda m: self._add(self.commands), RECORD_QOS)
        self.instruction = self.create_publisher(String, config.topics.instruction, COMMAND_QOS)

    def _add(self, arrivals: list[float]) -> None:
        with self._lock:
            arrivals.append(time.monotonic())

    def count_since(self, arrivals: list[float], t: float) -> int:
        with self._lock:
            return sum(1 for a in arrivals if a >= t)


def robot_yaml(tmp_path: Path) -> Path:
    raw = yaml.safe_load(PANDA.read_text())
    raw["max_observation_age_s"] = 0.4  # 10 Hz CPU-rendered images on a shared 2-core machine
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start_bringup(args: list[str], log: Path, domain_id: int) -> subprocess.Popen:
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "vla.cli", "ros-bringup", *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def child_pids(log: Path) -> dict[str, int]:
    """The pids the bringup logged for its two processes."""
    return {name: int(pid) for name, pid in re.findall(r"(sim-arm|serve-ros): pid (\d+)", log.read_text())}


def alive(pid: int) -> bool:
    """Running, and not a zombie (a zombie has exited and awaits its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stop(proc: subprocess.Popen, pids: dict[str, int]) -> None:
    """Cleanup if the test failed midway: nothing it started outlives it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for pid in pids.values():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_bringup_runs_both_and_sigterm_stops_both(tmp_path):
    robot = robot_yaml(tmp_path)
    config = load_robot_config(robot)
    checkpoint = save_tiny_policy(tmp_path / "policy", state_dim=8, action_mean=ACTION_MEAN)
    domain_id = random.randint(100, 200)
    log = tmp_path / "bringup.log"
    proc = start_bringup([f"--robot={robot}", f"--domain_id={domain_id}", f"--node.policy={checkpoint}"], log,
                         domain_id)
    prepare_ros_environment(domain_id, localhost_only=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    watcher = executor = spinner = None
    pids: dict[str, int] = {}
    try:
        watcher = Watcher(config, context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(watcher)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        wait_for(lambda: len(child_pids(log)) == 2, 20.0, f"both processes started\n{log.read_text()[-3000:]}")
        pids = child_pids(log)
        wait_for(lambda: watcher.count_since(watcher.states, 0.0) > 10 or proc.poll() is not None, 60.0,
                 f"joint states from the sim arm\n{log.read_text()[-3000:]}")
        enable = watcher.create_client(Trigger, "/vla_policy/enable_motion")
        wait_for(lambda: enable.service_is_ready() or proc.poll() is not None, 60.0,
                 f"the policy node's services\n{log.read_text()[-3000:]}")
        watcher.destroy_client(enable)
        assert proc.poll() is None, log.read_text()[-3000:]
        for _ in range(3):  # the first may go out before discovery completes
            watcher.instruction.publish(String(data="lift the cube"))
            time.sleep(0.1)
        assert call(watcher, "/vla_policy/enable_motion", 10.0).success
        wait_for(lambda: watcher.count_since(watcher.commands, 0.0) > 25, 30.0,
                 f"commands from the policy node\n{log.read_text()[-3000:]}")
        assert all(alive(pid) for pid in pids.values()), pids

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        stopped = time.monotonic()
        time.sleep(1.0)
        text = log.read_text()
        assert code == 0, f"bringup exit status {code}\n{text[-3000:]}"
        assert [name for name, pid in pids.items() if alive(pid)] == [], "a process outlived the bringup"
        assert "sim-arm exited with status 0" in text and "serve-ros exited with status 0" in text, text[-3000:]
        assert watcher.count_since(watcher.states, stopped) == 0 and watcher.count_since(watcher.commands, stopped) == 0
        assert "[serve-ros]" in text and "[sim-arm]" in text, "the children's output is not relayed, prefixed"
    finally:
        stop(proc, pids)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if watcher is not None:
            watcher.destroy_node()
        rclpy.shutdown(context=context)
        if spinner is not None:
            spinner.join(2.0)


def test_bringup_stops_the_arm_and_fails_when_the_policy_node_dies(tmp_path):
    robot = robot_yaml(tmp_path)
    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()  # passes the bringup's check (a directory), fails serve-ros's load
    log = tmp_path / "bringup.log"
    domain_id = random.randint(100, 200)
    proc = start_bringup([f"--robot={robot}", f"--domain_id={domain_id}", f"--node.policy={not_a_checkpoint}"], log,
                         domain_id)
    pids: dict[str, int] = {}
    try:
        code = proc.wait(120)
        text = log.read_text()
        pids = child_pids(log)
        assert code == 1, f"bringup exit status {code}\n{text[-3000:]}"
        assert "serve-ros exited on its own" in text, text[-3000:]
        assert set(pids) == {"sim-arm", "serve-ros"}
        time.sleep(0.5)
        assert [name for name, pid in pids.items() if alive(pid)] == [], "the sim arm outlived the bringup"
    finally:
        stop(proc, pids)


@pytest.mark.parametrize("args, message", [
    (["--node.robot=configs/robot/other.yaml"], "node.robot"),
    (["--arm.domain_id=7", "--domain_id=8"], "arm.domain_id"),
    (["--robot=does/not/exist.yaml"], "does/not/exist.yaml"),
    (["--domain_id=300"], "0..232"),
    (["--node.policy=does/not/exist"], "not a checkpoint directory"),
])
def test_bad_bringup_configs_are_refused_before_anything_starts(args, message, tmp_path, capsys):
    policy = ["--node.policy=" + str(tmp_path)] if not any(a.startswith("--node.policy") for a in args) else []
    assert main(["ros-bringup", *policy, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "pid" not in err, err


def test_launch_file_starts_both_with_flags_the_commands_accept(monkeypatch):
    """ROS's launch package is not installable here, so the launch file cannot be run. This loads it
    against stand-ins for the four launch names it uses (recording their arguments) and checks what
    can be checked without launch: it builds, each process is a `vla` command whose flags that
    command's config has, both get the same robot, and either one's exit shuts the launch down."""
    import dataclasses
    import importlib.util
    import types

    import vla.config

    class Recorded:
        def __init__(self, *args, **kwargs) -> None:
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration(Recorded):
        def __repr__(self) -> str:
            return f"<{self.args[0]}>"

    fakes = {"launch": types.ModuleType("launch"), "launch.actions": types.ModuleType("launch.actions"),
             "launch.substitutions": types.ModuleType("launch.substitutions")}
    fakes["launch"].LaunchDescription = Recorded
    for name in ("DeclareLaunchArgument", "ExecuteProcess", "Shutdown"):
        setattr(fakes["launch.actions"], name, type(name, (Recorded,), {}))
    fakes["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    path = ROOT / "real_robot" / "launch" / "vla_bringup.launch.py"
    spec = importlib.util.spec_from_file_location("vla_bringup_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    entities = module.generate_launch_description().args[0]
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    processes = {e.kwargs["cmd"][1]: e for e in entities if type(e).__name__ == "ExecuteProcess"}
    assert set(processes) == {"sim-arm", "serve-ros"}
    configs = {"sim-arm": vla.config.SimArmConfig, "serve-ros": vla.config.ServeRosConfig}
    for command, process in processes.items():
        cmd = process.kwargs["cmd"]
        assert repr(cmd[0]) == "<vla>"
        flags = {part[0].removeprefix("--").rstrip("="): repr(part[1]) for part in cmd[2:]}
        fields = {f.name for f in dataclasses.fields(configs[command])}
        assert set(flags) <= fields, f"{command} has no option {set(flags) - fields}"
        assert {value.strip("<>") for value in flags.values()} <= set(declared), "an undeclared launch argument"
        assert flags["robot"] == "<robot>"
        assert type(process.kwargs["on_exit"]).__name__ == "Shutdown"
    assert Path(ROOT / declared["robot"]).is_file()


def test_in_process_bringup_gives_the_callers_signal_handlers_back(tmp_path):
    """A script or test that calls run_bringup itself keeps its own Ctrl-C handling afterwards."""
    from vla.config import RosBringupConfig, parse_config
    from vla.real_robot.bringup import run_bringup

    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()
    config = parse_config(RosBringupConfig, [f"--robot={robot_yaml(tmp_path)}", f"--node.policy={not_a_checkpoint}",
                                             f"--domain_id={random.randint(100, 200)}"])

    def callers_handler(signum, frame):  # pragma: no cover - never delivered
        raise AssertionError("not called")

    before = {sig: signal.signal(sig, callers_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = threading.Event()
        stop.set()  # stop at once: starts both children, then stops them
        run_bringup(config, stop)
        assert signal.getsignal(signal.SIGINT) is callers_handler
        assert signal.getsignal(signal.SIGTERM) is callers_handler
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)

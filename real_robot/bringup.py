"""`vla ros-bringup`: the sim arm and the policy node from one config, as two supervised processes.

What `ros2 launch real_robot/launch/vla_bringup.launch.py` does for those who have ROS's launch
packages (they are not on PyPI, so that file is untested here): start `vla sim-arm` and
`vla serve-ros` as child processes, stop both on Ctrl-C/SIGTERM, and stop the other and exit
non-zero when either exits on its own. Separate processes, not two nodes in one: MuJoCo's EGL
context and triton in one process crashed once (docs/DECISIONS.md).

Children run in their own process group, so a terminal's Ctrl-C reaches them once, through
this supervisor, not twice; and they get SIGTERM from the kernel if the supervisor dies without
stopping them (PR_SET_PDEATHSIG), so no policy node outlives its bringup.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from vla.errors import UserError

_log = logging.getLogger("vla.real_robot.bringup")
# Exit codes that mean "stopped as asked": 0 after a clean stop; 130 (the CLI's KeyboardInterrupt
# path) and -SIGINT when the signal came before the child had installed its own handler.
STOPPED_CODES = (0, 130, -signal.SIGINT)
SHARED = ("robot", "domain_id")  # set once, at the top of the bringup config
PR_SET_PDEATHSIG = 1


class BringupError(UserError):
    """The bringup config asks for something that cannot run; said before anything starts."""


def child_commands(config: Any) -> dict[str, list[str]]:
    """name -> argv of the two `vla` processes for a RosBringupConfig (checked, see check_config)."""
    check_config(config)
    commands = {}
    for name, command, options in (("sim-arm", "sim-arm", config.arm), ("serve-ros", "serve-ros", config.node)):
        values = {**dataclasses.asdict(options), **{key: getattr(config, key) for key in SHARED}}
        flags = [f"--{key}={_flag(value)}" for key, value in values.items() if value is not None]
        commands[name] = [sys.executable, "-m", "vla.cli", command, *flags]
    return commands


def check_config(config: Any) -> None:
    """Refuse before starting anything what would only fail later in one child: a robot or domain
    given twice, a missing robot config or policy, a domain id out of range."""
    for section in ("arm", "node"):
        defaults = type(getattr(config, section))()
        for key in SHARED:
            value = getattr(getattr(config, section), key)
            if value != getattr(defaults, key) and value != getattr(config, key):
                raise BringupError(f"{section}.{key} is {value!r} but {key} is {getattr(config, key)!r}: the two "
                                   f"processes share one; set --{key} only")
    from vla.real_robot.robot_config import load_robot_config

    load_robot_config(config.robot)  # its own errors name the file and key
    if config.domain_id is not None and not 0 <= config.domain_id <= 232:
        raise BringupError(f"domain_id must be in 0..232, got {config.domain_id}")
    policy = config.node.policy
    if not policy.startswith(("ws://", "wss://")) and not Path(policy).is_dir():
        raise BringupError(f"node.policy {policy!r} is not a checkpoint directory (or a ws://host:port policy "
                           f"server)")
    if not (math.isfinite(config.stop_timeout_s) and config.stop_timeout_s > 0):
        raise BringupError(f"stop_timeout_s must be positive, got {config.stop_timeout_s}")


def run_bringup(config: Any, stop: threading.Event | None = None) -> int:
    """Run both processes until Ctrl-C/SIGTERM (or `stop`), or until one exits. Returns the exit
    status: 0 when both stopped cleanly on request, 1 when one exited on its own (the other is
    stopped) or one had to be killed."""
    commands = child_commands(config)  # config errors before any process starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop or threading.Event()
    signals: list[int] = []
    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum, _frame):
            signals.append(signum)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[sig] = signal.signal(sig, on_signal)
    try:
        return _supervise(commands, config, stop, signals)
    finally:
        # Called in-process (tests, a user's script), the caller's own Ctrl-C handling comes back.
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)


def _supervise(commands: dict[str, list[str]], config: Any, stop: threading.Event, signals: list[int]) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the children's lines reach the terminal as written
    children: dict[str, subprocess.Popen] = {}
    try:
        # All started before any reader thread exists: preexec_fn is only safe without other threads.
        for name, argv in commands.items():
            children[name] = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, process_group=0,
                                              preexec_fn=_die_with_parent)
            _log.info(f"{name}: pid {children[name].pid}: {' '.join(argv[3:])}")
        readers = [threading.Thread(target=_relay, args=(name, child.stdout), daemon=True)
                   for name, child in children.items()]
        for reader in readers:
            reader.start()
        died = None
        while not stop.wait(0.2):
            died = next((name for name, child in children.items() if child.poll() is not None), None)
            if died is not None:
                break
        if died is not None:
            _log.error(f"{died} exited on its own with status {children[died].returncode}: stopping the rest")
        else:
            _log.info(f"{signal.Signals(signals[0]).name if signals else 'stop'}: stopping both")
        codes = _stop_all(children, config.stop_timeout_s, signals)
        for reader in readers:
            reader.join(2.0)
    except BaseException:
        _stop_all(children, config.stop_timeout_s, signals)
        raise
    if died is not None:
        return 1
    bad = {name: code for name, code in codes.items() if code not in STOPPED_CODES}
    if bad:
        _log.error(f"not a clean stop: {bad}")
        return 1
    _log.info("both stopped")
    return 0


def _stop_all(children: dict[str, subprocess.Popen], timeout_s: float, signals: list[int]) -> dict[str, int]:
    """SIGINT to every live child at once (what their Ctrl-C handling expects), then wait; SIGKILL
    to one still running after timeout_s, or at once when a second signal reached us."""
    first = len(signals)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    codes = {}
    for name, child in children.items():
        while child.poll() is None and time.monotonic() < deadline and len(signals) <= max(first, 1):
            time.sleep(0.05)
        if child.poll() is None:
            _log.error(f"{name} did not stop within {timeout_s} s (or a second signal came): killing it")
            child.kill()
            child.wait()
            codes[name] = -signal.SIGKILL
        else:
            codes[name] = child.returncode
            _log.info(f"{name} exited with status {child.returncode}")
    return codes


def _relay(name: str, stream: IO[bytes]) -> None:
    """Copy a child's output to ours, each line prefixed with its name (as ros2 launch does)."""
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"[{name}] {line.decode(errors='replace')}")
        sys.stdout.flush()
    stream.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies, however it dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own stop path still applies
        pass


def _flag(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)

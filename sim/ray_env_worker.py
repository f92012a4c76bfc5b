"""The env worker of the Ray backend: what a VectorEnv worker process does, as a Ray actor.

It holds up to ``envs_per_worker`` envs and answers the same commands as the local worker
(``reset``, ``step_chunk``, ``privileged_state``) with the same ``("ok", result)`` /
``("error", (slot, traceback))`` answers, so the driver side (ray_vector_env.py) reads them the way
VectorEnv reads its pipes. It is a plain class; the driver wraps it with ``ray.remote``, so importing
this module needs no Ray.

A failure to build the envs is kept and reported by ``ready`` instead of killing the actor, so the
driver can name it (and the code fingerprint is compared before anything else).
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any, Callable

from .code_version import code_fingerprint
from .vector_env import _on_each, _SlotError


class EnvWorker:
    @staticmethod
    def extra_fingerprint() -> dict[str, str]:
        """What else than code_version.py's fingerprint must match between the driver and this kind of
        worker (a subclass that runs more code adds it: vla/rl/ray_rollout.py)."""
        return {}

    def __init__(self, env_kwargs: dict[str, Any], n_envs: int) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")  # a cluster node's worker may not inherit the driver's env
        self.fingerprint = {**code_fingerprint(), **self.extra_fingerprint()}
        self.envs: list[Any] = []
        self.start_error: tuple[int, str] | None = None
        self.fault_sleep_s = 0.0
        try:
            from .make_env import make_env

            for _ in range(n_envs):
                self.envs.append(make_env(**env_kwargs))
        except Exception:  # noqa: BLE001 - reported to the driver verbatim by ready()
            self.start_error = (len(self.envs), traceback.format_exc())

    def ready(self) -> tuple[dict[str, str], tuple[int, str] | None]:
        """This worker's code fingerprint and its start-up error (slot, traceback), if any."""
        return self.fingerprint, self.start_error

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this worker runs on (to check placement)."""
        import ray  # only ever called inside a Ray actor

        return ray.get_runtime_context().get_node_id()

    def call(self, command: str, items: list[tuple[int, Any]]) -> tuple[str, Any]:
        """Run ``command`` on the envs named in ``items`` ((slot, argument) pairs), in order."""
        handlers: dict[str, Callable[[Any, Any], Any]] = {
            "reset": lambda env, a: env.reset(seed=a[0], options=a[1])[0],
            "step_chunk": lambda env, a: env.step_chunk(a[0], record=a[1]),
            "privileged_state": lambda env, _: env.privileged_state(),
        }
        try:
            if command == "step_chunk" and self.fault_sleep_s > 0:  # test-only: a hung simulator
                seconds, self.fault_sleep_s = self.fault_sleep_s, 0.0
                time.sleep(seconds)
            return "ok", _on_each(self.envs, items, handlers[command])
        except _SlotError as exc:
            return "error", (exc.slot, exc.text)
        except Exception:  # noqa: BLE001
            return "error", (None, traceback.format_exc())

    def inject_fault(self, sleep_s: float) -> None:
        """Test-only: sleep ``sleep_s`` before the next step_chunk (see VectorEnv._inject_fault)."""
        self.fault_sleep_s = float(sleep_s)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []

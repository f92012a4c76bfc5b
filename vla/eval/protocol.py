"""The published LIBERO evaluation protocol, and what a run does differently.

OpenVLA-OFT, openpi, RLinf, SimpleVLA-RL and SRPO report LIBERO success rates under one
protocol: both cameras (third-person and wrist) rendered at 256x256 and rotated 180 degrees
(``img[::-1, ::-1]``), 50 episodes per task from the suite's own fixed initial states
(episode i = state i), 10 no-op steps after each reset that do not count, the per-suite step
limit, 20 Hz control, every task of the suite, success if any step succeeds. The policy
resizes the images itself (224 px for OpenVLA and pi0). `configs/eval/libero.yaml` sets all of
it; ``libero_deviations`` lists what a run changes, and `vla eval` prints the list and writes it
into eval_info.json (docs/LIBERO.md).
"""

from __future__ import annotations

LIBERO_PROTOCOL = {
    "name": "LIBERO (OpenVLA-OFT / openpi evaluation scripts)",
    "cameras": ["agentview", "robot0_eye_in_hand"],
    "image_size": 256,
    "image_convention": "rot180",
    "episodes_per_task": 50,
    "init_states": "the suite's own fixed initial states: episode i of each task starts from state i",
    "noop_steps_after_reset": 10,
    "max_episode_steps": "per suite: libero_spatial 220, libero_object 280, libero_goal 300, libero_10 520, "
                         "libero_90 400 (a LIBERO-PRO suite: its base suite's)",
    "control_freq": 20,
    "tasks": "every task of the suite",
    "success": "any step succeeds",
}


def libero_deviations(*, cameras, image_size: int, image_convention: str, control_freq: float,
                      episodes_per_task: int, task_ids: list[int], n_tasks: int, step_limits: dict[str, int],
                      protocol_limits: dict[str, int], fixed_init_states: bool = True) -> list[str]:
    """Human-readable differences between a LIBERO run and LIBERO_PROTOCOL (empty: it follows it).

    step_limits / protocol_limits: task -> the limit the run applies / the suite's limit."""
    p = LIBERO_PROTOCOL
    out = []
    if list(cameras) != p["cameras"]:
        shown = ", ".join(cameras) if cameras else "none (a state policy: no images)"
        out.append(f"cameras: {shown}; the protocol renders {', '.join(p['cameras'])}")
    if cameras and image_size != p["image_size"]:
        out.append(f"images rendered at {image_size} px; the protocol renders {p['image_size']} px")
    if cameras and image_convention != p["image_convention"]:
        out.append(f"image convention {image_convention!r}; the protocol's is {p['image_convention']!r} (the raw "
                   "render rotated 180 degrees)")
    if control_freq != p["control_freq"]:
        out.append(f"control at {control_freq} Hz; the protocol's is {p['control_freq']} Hz")
    if episodes_per_task != p["episodes_per_task"]:
        out.append(f"{episodes_per_task} episodes per task; the protocol runs {p['episodes_per_task']}")
    if task_ids and sorted(set(task_ids)) != list(range(n_tasks)):
        out.append(f"tasks {sorted(set(task_ids))} of the suite's {n_tasks}; the protocol runs every task")
    if not fixed_init_states:
        out.append("initial states drawn at random from the suite's (env.task mode); the protocol starts episode "
                   "i from state i: use --suite with --task_ids")
    changed = {t: (n, protocol_limits[t]) for t, n in step_limits.items() if n != protocol_limits[t]}
    if changed:
        limits = sorted({n for n, _ in changed.values()})
        theirs = sorted({m for _, m in changed.values()})
        out.append(f"step limit {', '.join(map(str, limits))} instead of the suite's {', '.join(map(str, theirs))}")
    return out

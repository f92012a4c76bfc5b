"""Grasp planning for the LIBERO expert: where to close the fingers, and at which yaw.

Candidates are gripper yaws every 15 degrees. At each, an object narrower than
the open fingers along the closing axis is taken whole, a little below its top
(bottles at the shoulder, flat boxes at mid height); an object wider than that
at every yaw (the 10.7 cm bowls) is taken by its wall, the fingers straddling
the rim on one side. Of the candidates, the one whose hand and open fingers
stay clearest of the other scene geoms wins (neighbouring cans, a drawer's
walls); ties go to the smaller turn.
"""

from __future__ import annotations

import numpy as np

# Panda fingers open to 8 cm; an object wider than this along the closing axis does not fit between them.
MAX_GRIP_WIDTH = 0.075
RIM_INSET = 0.012  # grip site inside the wall's outer edge (fingers straddle the wall)
RIM_DEPTH = 0.02  # grip site below the rim
TOP_DEPTH = 0.03  # grip site below the top of narrow objects

# Candidate gripper yaws (the gripper is symmetric under a half turn) and the Panda hand's footprint
# around the grip site, in (along the closing axis, across it) half-extents and heights above the site.
GRASP_YAWS = np.deg2rad(np.arange(-90.0, 90.0, 15.0))
HAND_BOX = (0.0, 0.105, 0.035, 0.03, 0.15)  # centre offset, half u, half v, z from, z to
FINGER_BOXES = ((0.045, 0.012, 0.012, -0.01, 0.03), (-0.045, 0.012, 0.012, -0.01, 0.03))
CLEARANCE_ENOUGH = 0.03  # m: clearer than this is no better
YAW_COST = 0.005  # m of clearance one radian of turning is worth (straight grasps when all is clear)


def _grasp_candidates(state: dict[str, np.ndarray]) -> list[tuple[np.ndarray, float]]:
    """(grip-site position, yaw) pairs that fit the fingers around the object, or else around its wall."""
    points, lo, hi = state["object_points"], state["object_lo"], state["object_hi"]
    around, walls = [], []
    for yaw in GRASP_YAWS:
        u = np.array([np.sin(yaw), -np.cos(yaw), 0.0])  # the fingers' closing axis (yaw_down's y)
        v = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        pu, pv = points @ u, points @ v
        width = pu.max() - pu.min()
        centre = u * (pu.max() + pu.min()) / 2 + v * (pv.max() + pv.min()) / 2
        if width <= MAX_GRIP_WIDTH:
            around.append((centre + np.array([0.0, 0.0, max(hi[2] - TOP_DEPTH, (lo[2] + hi[2]) / 2)]), yaw))
        for side in (-1.0, 1.0):  # the wall on either side, between the fingers (bowls)
            wall = centre + side * u * (width / 2 - RIM_INSET)
            walls.append((wall + np.array([0.0, 0.0, hi[2] - RIM_DEPTH]), yaw))
    return around or walls


def _clearance(point: np.ndarray, yaw: float, state: dict[str, np.ndarray], floor: float,
               lift: float = 0.0) -> float:
    """Smallest signed distance (m) from the hand and open fingers at ``point`` to any obstacle box.

    The hand and fingers are sampled as points; nothing below ``floor`` (what the object stands
    on) counts. ``lift`` stretches the hand's box that far up: the hand on its way up with the object.
    """
    u = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    v = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    samples = []
    hand = HAND_BOX[:4] + (HAND_BOX[4] + lift,)
    for offset, half_u, half_v, z_from, z_to in (hand, *FINGER_BOXES):
        z_lo, z_hi = max(point[2] + z_from, floor), max(point[2] + z_to, floor)
        heights = max(3, int(np.ceil((z_hi - z_lo) / 0.06)) + 1)  # 3 over the plain hand (12 cm), as before
        a, b, z = np.meshgrid(np.linspace(-half_u, half_u, 5) + offset, np.linspace(-half_v, half_v, 3),
                              np.linspace(z_lo, z_hi, heights))
        samples.append(point[:2] + a.reshape(-1, 1) * u[:2] + b.reshape(-1, 1) * v[:2])
        samples[-1] = np.column_stack([samples[-1], z.reshape(-1)])
    pts = np.concatenate(samples)  # [P, 3]
    centre, rot, half = state["obstacle_centre"], state["obstacle_rot"], state["obstacle_half"]
    if len(centre) == 0:
        return np.inf
    local = np.abs(np.einsum("gji,gpj->gpi", rot, pts[None] - centre[:, None]))  # [G, P, 3] in box frames
    q = local - half[:, None]
    signed = np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(-1), 0.0)
    return float(signed.min())


def plan_grasp(state: dict[str, np.ndarray], lift: float = 0.0,
               place_shift: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The grasp (grip-site position, yaw) whose hand and fingers stay clearest of the rest of the scene;
    ``lift``: also the hand lifted that far (see ``_clearance``); ``place_shift`` (how far the object
    moves to its target): also the hand over the target, lifted, where a fixture beside the target
    (a cabinet by the plate) can stand in a hand that was clear at the grasp."""
    # What the object stands on (table, drawer floor) is no obstacle.
    floor = float(state["object_lo"][2]) + 0.005

    def clearance(p: np.ndarray, y: float) -> float:
        c = _clearance(p, y, state, floor, lift)
        if place_shift is not None:
            shift = np.asarray(place_shift, dtype=np.float64)
            c = min(c, _clearance(p + shift, y, state, floor + max(shift[2], 0.0), lift))
        return c

    scored = [(min(clearance(p, y), CLEARANCE_ENOUGH) - YAW_COST * abs(y), i, p, y)
              for i, (p, y) in enumerate(_grasp_candidates(state))]
    _, _, point, yaw = max(scored, key=lambda t: (t[0], -t[1]))
    return point, float(yaw)

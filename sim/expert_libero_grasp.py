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
HANDLE_BAND = 0.04  # m: how far in from an end a handle is looked for
HANDLE_WIDTH = 0.03  # m: at most this thick across the fingers (a moka pot's handle: 1.3 cm)

# Candidate gripper yaws (the gripper is symmetric under a half turn) and the Panda hand's footprint
# around the grip site, in (along the closing axis, across it) half-extents and heights above the site.
GRASP_YAWS = np.deg2rad(np.arange(-90.0, 90.0, 15.0))
HAND_BOX = (0.0, 0.105, 0.035, 0.03, 0.15)  # centre offset, half u, half v, z from, z to
FINGER_BOXES = ((0.045, 0.012, 0.012, -0.01, 0.03), (-0.045, 0.012, 0.012, -0.01, 0.03))
CLEARANCE_ENOUGH = 0.03  # m: clearer than this is no better
YAW_COST = 0.005  # m of clearance one radian of turning is worth (straight grasps when all is clear)


def _grasp_candidates(state: dict[str, np.ndarray], handles: bool = False) -> list[tuple[np.ndarray, float]]:
    """(grip-site position, yaw) pairs that fit the fingers around the object, or else (``handles``)
    around a thin part at one end (a moka pot's handle), or else around its wall."""
    points, lo, hi = state["object_points"], state["object_lo"], state["object_hi"]
    around, ends, walls = [], [], []
    for yaw in GRASP_YAWS:
        u = np.array([np.sin(yaw), -np.cos(yaw), 0.0])  # the fingers' closing axis (yaw_down's y)
        v = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        pu, pv = points @ u, points @ v
        width = pu.max() - pu.min()
        centre = u * (pu.max() + pu.min()) / 2 + v * (pv.max() + pv.min()) / 2
        if width <= MAX_GRIP_WIDTH:
            around.append((centre + np.array([0.0, 0.0, max(hi[2] - TOP_DEPTH, (lo[2] + hi[2]) / 2)]), yaw))
        if handles and width > MAX_GRIP_WIDTH:
            ends += _handle_candidates(points, pu, pv, u, v, yaw)
        for side in (-1.0, 1.0):  # the wall on either side, between the fingers (bowls)
            wall = centre + side * u * (width / 2 - RIM_INSET)
            walls.append((wall + np.array([0.0, 0.0, hi[2] - RIM_DEPTH]), yaw))
    return around or ends or walls


def _handle_candidates(points: np.ndarray, pu: np.ndarray, pv: np.ndarray, u: np.ndarray, v: np.ndarray,
                       yaw: float) -> list[tuple[np.ndarray, float]]:
    """Grasps across a thin part sticking out at either end along ``v`` (the fingers close along ``u``):
    the object's geom boxes within HANDLE_BAND of that end span at most HANDLE_WIDTH along ``u``."""
    found = []
    for end, inward in ((pv.max(), -1.0), (pv.min(), 1.0)):
        # Whole geom boxes reaching into the band: a corner of the body there is no handle.
        band = (np.abs(pv - end) < HANDLE_BAND).reshape(-1, 8).any(1).repeat(8)
        bu, bz = pu[band], points[band, 2]
        if bu.max() - bu.min() > HANDLE_WIDTH:
            continue
        centre = u * (bu.max() + bu.min()) / 2 + v * (end + inward * HANDLE_BAND / 2)
        if not _over_a_box(centre[:2], points):  # cut diagonally across the handle's tip: not on it
            continue
        found.append((centre + np.array([0.0, 0.0, max(bz.max() - TOP_DEPTH, (bz.max() + bz.min()) / 2)]), yaw))
    return found


def _over_a_box(xy: np.ndarray, points: np.ndarray) -> bool:
    """Whether ``xy`` lies over one of the object's geom boxes (``points``: 8 corners per geom, in
    itertools.product([-1, 1], repeat=3) order, as ``expert_libero_scene`` gives them)."""
    for box in points.reshape(-1, 8, 3)[:, :, :2]:
        # The box's edges seen from above; the two longest span its footprint (geoms are turned any
        # way: a handle's boxes stand on end).
        edges = sorted((box[4] - box[0], box[2] - box[0], box[1] - box[0]), key=lambda e: -float(e @ e))
        a, b = (xy - box[0]) @ edges[0], (xy - box[0]) @ edges[1]
        if 0.0 <= a <= edges[0] @ edges[0] and 0.0 <= b <= edges[1] @ edges[1]:
            return True
    return False


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
               place_shift: np.ndarray | None = None, handles: bool = False) -> tuple[np.ndarray, float]:
    """The grasp (grip-site position, yaw) whose hand and fingers stay clearest of the rest of the scene;
    ``lift``: also the hand lifted that far (see ``_clearance``); ``place_shift`` (how far the object
    moves to its target): also the hand over the target, lifted, where a fixture beside the target
    (a cabinet by the plate) can stand in a hand that was clear at the grasp; ``handles``: objects too
    wide to take whole are taken by a handle where they have one (``_handle_candidates``)."""
    # What the object stands on (table, drawer floor) is no obstacle.
    floor = float(state["object_lo"][2]) + 0.005
    candidates = _grasp_candidates(state, handles)
    at_grasp = [_clearance(p, y, state, floor, lift) for p, y in candidates]
    clear = at_grasp
    if place_shift is not None:
        shift = np.asarray(place_shift, dtype=np.float64)
        at_place = [_clearance(p + shift, y, state, floor + max(shift[2], 0.0), lift) for p, y in candidates]
        # Where no hand clears the target (into a drawer under another), the target cannot choose.
        if max(at_place) >= 0.0:
            clear = [min(a, b) for a, b in zip(at_grasp, at_place)]
    scored = [(min(c, CLEARANCE_ENOUGH) - YAW_COST * abs(y), i, p, y)
              for i, (c, (p, y)) in enumerate(zip(clear, candidates))]
    _, _, point, yaw = max(scored, key=lambda t: (t[0], -t[1]))
    return point, float(yaw)

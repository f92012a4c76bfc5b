"""Making room before opening a drawer: what stands in its way, and where to put it.

In libero_goal the bowl often stands in front of the cabinet. Opening the middle drawer,
the hand (horizontal, 20 cm tall along its closing axis) hits the bowl, or the drawer
pushes it; with the top drawer open, the drawer overhangs the bowl and the hand cannot
come down to it. So before opening, each movable object inside the region the drawer
and the pulling hand sweep is carried to the nearest free spot on the table outside it.

A region is a box in the drawer's frame: ``d`` (horizontal, the way it opens) and ``e``
(horizontal, across it), given as [d_x, d_y, d_from, d_to, e_from, e_to].
"""

from __future__ import annotations

import numpy as np

HAND_REACH = 0.25  # m beyond the open drawer's front the hand goes (pre-grasp standoff, backing off)
HAND_HALF = 0.06  # m: half the hand's thickness across the drawer, and a margin
HAND_BELOW = 0.10  # m the horizontal hand reaches below the handle (its closing axis is vertical)
FLAT = 0.03  # m: objects lower than this (a plate, a lying box) pass under the hand
SIDE_MARGIN = 0.03  # m beyond the drawer's sides
UNDER_MARGIN = 0.05  # m around the open drawer: an object there cannot be grasped from above
SPOT_MARGIN = 0.03  # m between a moved object and the regions, or another object
SPOT_RANGE = 0.45  # m: the farthest an object is moved
NEAR_MARGIN = SPOT_RANGE + 0.05  # objects this near the regions are reported (one being moved stays reported)
# Where the Panda puts things comfortably on LIBERO's table (world x, y; base at x = -0.66).
REACH_X = (-0.3, 0.1)  # beyond x = 0.1, carrying a bowl at 0.95 m the arm sinks (out of reach)
REACH_Y = (-0.3, 0.3)


def sweep_regions(part_points: np.ndarray, direction: np.ndarray, travel: float) -> np.ndarray:
    """[2, 6]: the drawer's footprint from closed to open (its sides widened by a margin), and the
    hand's: from the drawer's front out to ``travel`` plus the hand's reach, as wide as the hand,
    about the handle (the front's middle). ``direction``: the horizontal way the drawer opens."""
    d = np.array([direction[0], direction[1]], dtype=np.float64)
    d /= np.linalg.norm(d)
    e = np.array([-d[1], d[0]])
    pd, pe = part_points[:, :2] @ d, part_points[:, :2] @ e
    handle = float(pe[pd > pd.max() - 0.012].mean())
    body = [d[0], d[1], pd.min(), pd.max() + travel, pe.min() - SIDE_MARGIN, pe.max() + SIDE_MARGIN]
    hand = [d[0], d[1], pd.max(), pd.max() + travel + HAND_REACH, handle - HAND_HALF, handle + HAND_HALF]
    return np.array([body, hand])


def _frame(sweep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(sweep[:2], dtype=np.float64)
    return d, np.array([-d[1], d[0]])


def overlaps(sweep: np.ndarray, lo: np.ndarray, hi: np.ndarray, margin: float = 0.0) -> bool:
    """Whether the world box ``lo``-``hi`` (its xy footprint) reaches into the region."""
    d, e = _frame(sweep)
    corners = np.array([[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
    cd, ce = corners @ d, corners @ e
    return bool(cd.max() > sweep[2] - margin and cd.min() < sweep[3] + margin
                and ce.max() > sweep[4] - margin and ce.min() < sweep[5] + margin)


def in_the_way(regions: np.ndarray, lo: np.ndarray, hi: np.ndarray, part_lo_z: float, hand_low: float,
               picked_later: bool) -> bool:
    """A movable object to clear away first (not one riding in the drawer itself): in the drawer's
    path; or tall enough to meet the hand in its path; or to be picked later from under the open drawer."""
    if lo[2] > part_lo_z - 0.01:
        return False
    body, hand = regions
    if overlaps(body, lo, hi) and hi[2] > part_lo_z:
        return True
    if overlaps(hand, lo, hi) and meets_hand(lo, hi, hand_low):
        return True
    return picked_later and overlaps(body, lo, hi, UNDER_MARGIN)


def meets_hand(lo: np.ndarray, hi: np.ndarray, hand_low: float) -> bool:
    """Whether an object standing there reaches up to the horizontal hand (lowest at ``hand_low``)."""
    return bool(hi[2] > hand_low and hi[2] - lo[2] > FLAT)


def free_spot(view: dict[str, np.ndarray], regions: np.ndarray, hand_low: float) -> np.ndarray | None:
    """Where to put the object of ``view`` (place-style entries): the nearest table spot, within reach,
    whose footprint keeps SPOT_MARGIN from the regions and from every obstacle standing on the
    table. [x, y, z] of the object's footprint centre at its current bottom; None if none is found."""
    lo, hi = np.asarray(view["object_lo"], dtype=np.float64), np.asarray(view["object_hi"], dtype=np.float64)
    centre, rot, half = view["obstacle_centre"], view["obstacle_rot"], view["obstacle_half"]
    bottom, top = lo[2], hi[2]
    # Obstacles standing on the table near the object's height (not the table, not what hangs above).
    extent_z = np.einsum("gij,gj->gi", np.abs(rot), half)[:, 2]
    tops = centre[:, 2] + extent_z
    bottoms = centre[:, 2] - extent_z
    standing = (tops > bottom + 0.005) & (bottoms < top + 0.05)
    c, r, h = centre[standing], rot[standing], half[standing]
    if not meets_hand(lo, hi, hand_low):  # only the drawer's own path to keep clear
        regions = regions[:1]
    d, e = _frame(regions[0])
    mid = (lo[:2] + hi[:2]) / 2
    best = None
    for sd in np.arange(0.0, SPOT_RANGE, 0.03):
        for se in np.arange(-SPOT_RANGE, SPOT_RANGE + 0.01, 0.03):
            shift = sd * d + se * e
            cost = float(np.hypot(sd, se))
            if best is not None and cost >= best[0]:
                continue
            new_lo, new_hi = lo[:2] + shift, hi[:2] + shift
            spot = mid + shift
            if not (REACH_X[0] < spot[0] < REACH_X[1] and REACH_Y[0] < spot[1] < REACH_Y[1]):
                continue
            if any(overlaps(r, new_lo, new_hi, SPOT_MARGIN) for r in regions):
                continue
            if len(c) and box_distance(new_lo, new_hi, bottom, top, c, r, h) < SPOT_MARGIN:
                continue
            best = (cost, spot)
    if best is None:
        return None
    return np.array([best[1][0], best[1][1], bottom])


def box_distance(lo: np.ndarray, hi: np.ndarray, bottom: float, top: float, centre: np.ndarray,
                 rot: np.ndarray, half: np.ndarray) -> float:
    """Smallest signed distance from points filling the box (xy ``lo``-``hi``, z ``bottom``-``top``) to
    the oriented boxes."""
    x, y, z = np.meshgrid(np.linspace(lo[0], hi[0], 5), np.linspace(lo[1], hi[1], 5),
                          np.linspace(bottom + 0.005, top, 3))
    pts = np.column_stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)])
    local = np.abs(np.einsum("gji,gpj->gpi", rot, pts[None] - centre[:, None]))
    q = local - half[:, None]
    return float((np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(-1), 0.0)).min())

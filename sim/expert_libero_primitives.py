"""Primitives of the LIBERO task expert (``expert_libero_task``), all on privileged poses.

- pick-and-place (On/In): ``LiberoPickPlaceExpert`` on the subgoal's entries (``PlaceExpert``); a flat
  object too wide to grasp, going elsewhere on the surface it stands on (push the plate ...), is slid
  there (``SlideExpert``); an object in a drawer's way is carried aside (``ClearExpert``);
- ``KnobExpert`` (TurnOn/TurnOff): close the fingers around the knob's bar from above and turn
  the wrist about the knob's hinge until the joint passes its goal;
- ``DrawerOpenExpert`` (Open, sliding joint): gripper horizontal, pointing at the drawer, fingers
  above and below the handle bar; close, pull along the joint axis, let go, back off;
- ``PushExpert`` (Close, sliding or hinged): closed fingers against the part's face that leads
  the closing motion (a drawer's handle, a door's free edge), pushed along that motion.
"""

from __future__ import annotations

import numpy as np

from .expert_base import WaypointExpert, gripper_yaw
from .expert_libero import LiberoPickPlaceExpert
from .expert_libero_room import box_distance
from .expert_pick_place import Phase as PickPhase
from .rotations import matrix_to_rotvec, quat_xyzw_to_matrix

SLIDE, HINGE = 2, 3  # MuJoCo joint types
BASE_KEYS = ("eef_pos", "eef_quat", "gripper_qpos")


class PrimitivePhase:
    """A phase name with ``.value`` (what benchmarks/experts.py prints)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Phase({self.value!r})"


class _Primitive(WaypointExpert):
    """A short scripted motion through named phases; ``finished`` once it has backed off."""

    phases: tuple[str, ...] = ()
    max_arm_action = 0.5
    fast_action = 1.0  # for moves with nothing held or touched: libero_goal allows 300 steps for three primitives
    close_steps = 10
    open_steps = 6

    def reset(self) -> None:
        self.phase = PrimitivePhase(self.phases[0])
        self._count = 0
        self._memo: dict[str, np.ndarray | float] = {}
        self._clear_integral()

    @property
    def finished(self) -> bool:
        return self.phase.value == "done"

    def _enter(self, name: str) -> None:
        self.phase = PrimitivePhase(name)
        self._count = 0
        self._clear_integral()

    def _near(self, eef: np.ndarray, target: np.ndarray, tol: float = 0.01) -> bool:
        return bool(np.linalg.norm(eef - target) < tol)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-9 else v


def _motion_direction(state: dict[str, np.ndarray], point: np.ndarray) -> np.ndarray:
    """Unit world direction ``point`` (on the moving part) moves in as the joint goes toward its goal."""
    axis = np.asarray(state["joint_axis"], dtype=np.float64)
    sign = np.sign(float(state["joint_goal"][0] - state["joint_qpos"][0])) or 1.0
    if int(state["joint_type"][0]) == SLIDE:
        return sign * _unit(axis)
    tangent = np.cross(axis, point - np.asarray(state["joint_anchor"], dtype=np.float64))
    tangent[2] = 0.0
    return sign * _unit(tangent)


def _reached(state: dict[str, np.ndarray]) -> bool:
    """The joint is at or past its goal, coming from where it started."""
    return bool(state["done"][0] > 0.5)


class KnobExpert(_Primitive):
    """TurnOn / TurnOff a knob with a hinge about the vertical (LIBERO's stoves)."""

    phases = ("approach", "descend", "grasp", "turn", "release", "retreat", "done")
    hover = 0.06
    grip_below_top = 0.015
    overturn = 0.3  # rad past the goal: the knob springs back a little when let go

    def act(self, s: dict[str, np.ndarray]) -> np.ndarray:
        eef = np.asarray(s["eef_pos"], dtype=np.float64)
        points = np.asarray(s["part_points"], dtype=np.float64)
        top = float(points[:, 2].max())
        anchor = np.asarray(s["joint_anchor"], dtype=np.float64)
        if "yaw" not in self._memo:
            # The knob's bar: its highest corners; their long horizontal axis is where the fingers close across.
            bar = points[points[:, 2] > top - 0.01, :2]
            bar = bar - bar.mean(0)
            _, vecs = np.linalg.eigh(bar.T @ bar)
            long_axis = vecs[:, -1]
            yaw = float(np.arctan2(long_axis[1], long_axis[0]))
            now = gripper_yaw(s["eef_quat"])
            yaw = min((yaw + k * np.pi for k in (-2, -1, 0, 1, 2)), key=lambda y: abs(y - now))
            self._memo["yaw"] = yaw
        yaw = float(self._memo["yaw"])
        grasp = np.array([anchor[0], anchor[1], top - self.grip_below_top])
        above = grasp + np.array([0.0, 0.0, self.hover])
        gripper = -1.0
        target = above
        name = self.phase.value
        if name == "approach":
            if self._near(eef, above, 0.015) and abs(gripper_yaw(s["eef_quat"]) - yaw) % np.pi < 0.1:
                self._enter("descend")
        elif name == "descend":
            target = grasp
            if self._near(eef, grasp, 0.008):
                self._enter("grasp")
        elif name == "grasp":
            target, gripper = grasp, 1.0
            self._count += 1
            if self._count > self.close_steps:
                turn = float(s["joint_goal"][0] - s["joint_qpos"][0])
                overturned = turn + np.sign(turn) * self.overturn
                self._memo["turn_to"] = yaw + np.sign(float(s["joint_axis"][2])) * overturned
                self._enter("turn")
        elif name == "turn":
            target, gripper = grasp, 1.0
            yaw = float(self._memo["turn_to"])
            self._count += 1
            if _reached(s) and self._count > 5 or self._count > 60:
                self._enter("release")
        elif name == "release":
            target, gripper = eef, -1.0
            yaw = float(self._memo["turn_to"])
            self._count += 1
            if self._count > self.open_steps:
                self._enter("retreat")
        elif name in ("retreat", "done"):
            target = np.array([eef[0], eef[1], top + 0.12])
            yaw = float(self._memo.get("turn_to", yaw))
            if eef[2] > top + 0.1:
                self._enter("done")
        return self._action(eef, target, s["eef_quat"], gripper, self.max_arm_action, yaw=yaw)


class DrawerOpenExpert(_Primitive):
    """Open a drawer: grasp its handle bar with the gripper horizontal and pull along the slide."""

    phases = ("over", "pregrasp", "approach", "grasp", "pull", "release", "back", "up", "done")
    standoff = 0.10  # pre-grasp distance in front of the handle
    over = 0.10  # m above the pre-grasp point, coming in
    bar_depth = 0.008  # grip this far behind the handle's front

    def _handle(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(handle grip point, outward direction d: the way the drawer opens)."""
        points = np.asarray(s["part_points"], dtype=np.float64)
        d = _motion_direction(s, points.mean(0))
        proj = points @ d
        front = points[proj > proj.max() - 0.012]
        grip = front.mean(0)
        grip += d * (proj.max() - self.bar_depth - grip @ d)
        return grip, d

    def act(self, s: dict[str, np.ndarray]) -> np.ndarray:
        eef = np.asarray(s["eef_pos"], dtype=np.float64)
        grip, d = self._handle(s)
        if "d" not in self._memo:
            self._memo["d"] = d
        d = np.asarray(self._memo["d"])  # the axis points the other way once past the goal
        # Gripper horizontal, pointing against d (at the drawer); fingers close along world z.
        y_axis = np.array([0.0, 0.0, 1.0])
        z_axis = -d
        rotation = np.column_stack([np.cross(y_axis, z_axis), y_axis, z_axis])
        pre = grip + self.standoff * d
        gripper, target, limit = -1.0, pre, self.max_arm_action
        name = self.phase.value
        if name == "over":
            # Above the pre-grasp point first, at full speed (nothing is held): the horizontal hand reaches
            # 10 cm below the fingers and would sweep what stands in front of the drawer.
            target, limit = pre + np.array([0.0, 0.0, self.over]), self.fast_action
            turned = np.linalg.norm(matrix_to_rotvec(rotation @ quat_xyzw_to_matrix(s["eef_quat"]).T)) < 0.1
            if self._near(eef, target, 0.02) and turned:  # fingers level before they go down to the bar
                self._enter("pregrasp")
        elif name == "pregrasp":
            if self._near(eef, pre, 0.015):
                self._enter("approach")
        elif name == "approach":
            target = grip
            if self._near(eef, grip, 0.008):
                self._enter("grasp")
        elif name == "grasp":
            target, gripper = grip, 1.0
            self._count += 1
            if self._count > self.close_steps:
                self._enter("pull")
        elif name == "pull":
            gripper = 1.0
            remaining = abs(float(s["joint_goal"][0] - s["joint_qpos"][0]))
            target = grip + d * min(remaining + 0.01, 0.05)
            self._count += 1
            if _reached(s) or self._count > 120:
                self._enter("release")
        elif name == "release":
            target, gripper = eef, -1.0
            self._count += 1
            if self._count > self.open_steps:
                self._memo["back_from"] = eef.copy()
                self._enter("back")
        elif name == "back":
            target, limit = np.asarray(self._memo["back_from"]) + 0.08 * d, self.fast_action
            if self._near(eef, target, 0.015):
                self._enter("up")
        elif name in ("up", "done"):
            # Up clear of the handle; the next primitive turns the gripper on its way.
            target = np.asarray(self._memo["back_from"]) + 0.08 * d + np.array([0.0, 0.0, 0.08])
            rotation, limit = None, self.fast_action
            if self._near(eef, target, 0.03):
                self._enter("done")
        return self._action(eef, target, s["eef_quat"], gripper, limit, rotation=rotation)


class PushExpert(_Primitive):
    """Close a drawer or a door: closed fingers against the face that leads the closing motion, pushed along it."""

    phases = ("above", "descend", "push", "back", "up", "done")
    standoff = 0.05
    clearance = 0.05  # above the part's top while moving over

    def _contact(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(contact point on the leading face, direction of the closing motion there)."""
        points = np.asarray(s["part_points"], dtype=np.float64)
        if int(s["joint_type"][0]) == HINGE:
            anchor = np.asarray(s["joint_anchor"], dtype=np.float64)
            axis = _unit(np.asarray(s["joint_axis"], dtype=np.float64))
            rel = points - anchor
            radial = rel - np.outer(rel @ axis, axis)
            r = np.linalg.norm(radial, axis=1)
            edge = points[r > r.max() - 0.04]  # near the free edge
        else:
            edge = points
        centre = edge.mean(0)
        d = _motion_direction(s, centre)
        proj = edge @ d
        face = edge[proj < proj.min() + 0.012]
        contact = face.mean(0)
        lo, hi = points[:, 2].min(), points[:, 2].max()
        contact[2] = np.clip(contact[2], lo + 0.02, hi - 0.01)
        return contact, d

    def act(self, s: dict[str, np.ndarray]) -> np.ndarray:
        eef = np.asarray(s["eef_pos"], dtype=np.float64)
        contact, d = self._contact(s)
        top = float(np.asarray(s["part_points"])[:, 2].max())
        start = contact - self.standoff * d
        above = np.array([start[0], start[1], max(top + self.clearance, start[2] + 0.05)])
        gripper, target = 1.0, above
        name = self.phase.value
        if name == "above":
            if self._near(eef, above, 0.02):
                self._enter("descend")
        elif name == "descend":
            target = start
            if self._near(eef, start, 0.01):
                self._enter("push")
        elif name == "push":
            target = contact + 0.03 * d
            self._count += 1
            if _reached(s) and self._count > 3 or self._count > 150:
                self._memo["back_from"] = eef.copy()
                self._memo["d"] = d
                self._enter("back")
        elif name == "back":
            target = np.asarray(self._memo["back_from"]) - 0.06 * np.asarray(self._memo["d"])
            if self._near(eef, target, 0.015):
                self._enter("up")
        elif name in ("up", "done"):
            target = np.asarray(self._memo["back_from"]) - 0.06 * np.asarray(self._memo["d"])
            target[2] = top + 0.1
            if self._near(eef, target, 0.03):
                self._enter("done")
        # The hand is 20 cm long along the fingers' closing axis: across the push, not along it, or it
        # meets the cabinet's face (or the drawer above) before the fingers have pushed the drawer home.
        if "yaw" not in self._memo:
            yaw = float(np.arctan2(d[1], d[0]))
            self._memo["yaw"] = (yaw + np.pi / 2) % np.pi - np.pi / 2
        return self._action(eef, target, s["eef_quat"], gripper, self.max_arm_action, yaw=float(self._memo["yaw"]))


class SlideExpert(_Primitive):
    """Slide a flat object too wide to grasp (a plate) across the table to a region on the same surface.

    The closed fingers go down into the middle of the dish and move toward the region; once they
    meet the rim ahead, they drag the plate along (from behind it, the hand would meet whatever
    stands there: the cabinet's handles, in libero_goal)."""

    phases = ("above", "descend", "push", "up", "done")
    tolerance = 0.012  # object origin within this of the region's centre (LIBERO's zones are 1-4 cm)
    lead = 0.03  # how far ahead of the fingers the target is each step
    height = 0.006  # grip site above the object's bottom (the fingertips stop at about 0.013)

    def act(self, s: dict[str, np.ndarray]) -> np.ndarray:
        eef = np.asarray(s["eef_pos"], dtype=np.float64)
        obj = np.asarray(s["object_pos"], dtype=np.float64)
        lo, hi = np.asarray(s["object_lo"]), np.asarray(s["object_hi"])
        goal = np.asarray(s["target_support"], dtype=np.float64)
        to_goal = goal[:2] - obj[:2]
        d = np.append(_unit(to_goal), 0.0)
        inside = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2] + self.height])
        # The hand is long along the fingers' closing axis: hold that across the motion.
        if "yaw" not in self._memo:
            yaw = float(np.arctan2(d[1], d[0]))
            self._memo["yaw"] = (yaw + np.pi / 2) % np.pi - np.pi / 2
        yaw = float(self._memo["yaw"])
        above = np.array([inside[0], inside[1], hi[2] + 0.08])
        gripper, target = 1.0, above
        name = self.phase.value
        if name == "above":
            if self._near(eef, above, 0.015):
                self._enter("descend")
        elif name == "descend":
            # Aimed a little below where the fingertips meet the dish (they press on it while pushing,
            # and drag it over what it meets instead of riding over its rim): close enough in z will do.
            target = inside
            if np.linalg.norm((eef - inside)[:2]) < 0.008 and eef[2] < inside[2] + 0.012:
                self._enter("push")
        elif name == "push":
            target = eef + d * min(self.lead, float(np.linalg.norm(to_goal)) + 0.003)
            target[2] = inside[2]
            self._count += 1
            if np.linalg.norm(to_goal) < self.tolerance or self._count > 200:
                self._enter("up")
        elif name in ("up", "done"):
            target = np.array([eef[0], eef[1], hi[2] + 0.1])
            if eef[2] > hi[2] + 0.08:
                self._enter("done")
        return self._action(eef, target, s["eef_quat"], gripper, self.max_arm_action, yaw=yaw)


def slides(state: dict[str, np.ndarray]) -> bool:
    """An On goal better met by sliding: a flat object wider than the fingers open, to a place on the
    surface it stands on."""
    lo, hi = np.asarray(state["object_lo"]), np.asarray(state["object_hi"])
    flat = hi[2] - lo[2] < 0.03 and min(hi[0] - lo[0], hi[1] - lo[1]) > 0.09
    return bool(flat and abs(float(state["target_support"][2]) - float(lo[2])) < 0.01)


class PlaceExpert(LiberoPickPlaceExpert):
    """The pick-and-place expert, ``finished`` after it has let go and lifted the gripper a while."""

    retreat_steps = 15
    # Tall fixtures (a cabinet, its open drawer) stand next to the objects in goal and libero_10 scenes:
    # a hand that clears them at the grasp can still hit them on the way up.
    grasp_lift = 0.12
    plan_for_place = True
    take_handles = True  # libero_10's moka pots (8 cm wide) by their handles
    lift_action = 0.75
    carry_clearance = 0.04  # lower than LIBERO-spatial's 0.08: the lift to clear an open drawer's walls is long

    def reset(self) -> None:
        super().reset()
        self._retreat = 0
        self._support: np.ndarray | None = None

    def place_target(self, state: dict[str, np.ndarray]) -> np.ndarray:
        if "target_corners" in state:
            if self._support is None:  # chosen once, before the grasp: the scene does not change meanwhile
                self._support = free_support(state)
            state = dict(state, target_support=self._support)
        return super().place_target(state)

    def act(self, privileged_state: dict[str, np.ndarray]) -> np.ndarray:
        # Nothing held on the way to the object or away from it: full speed (libero_goal allows 300
        # steps for clearing a drawer's way, opening it and placing). Not while lifting: a bowl held
        # by its rim slips out of a fast lift.
        fast = self.phase in (PickPhase.APPROACH, PickPhase.RETREAT)
        self.max_arm_action = 1.0 if fast else self.lift_action if self.phase is PickPhase.LIFT else 0.5
        action = super().act(privileged_state)
        self._retreat = self._retreat + 1 if self.phase is PickPhase.RETREAT else 0
        return action

    @property
    def finished(self) -> bool:
        return self._retreat >= self.retreat_steps


def free_support(state: dict[str, np.ndarray]) -> np.ndarray:
    """Where in the target region (``target_corners``) the object goes: the region's centre, unless
    a movable object (``obstacle_movable``) already stands there (the first moka pot), then the point of the region, 1.5 cm inside
    its edges, whose footprint keeps clearest of what stands on the target's surface."""
    support = np.asarray(state["target_support"], dtype=np.float64)
    obj, lo, hi = (np.asarray(state[k], dtype=np.float64) for k in ("object_pos", "object_lo", "object_hi"))
    centre, rot, half = state["obstacle_centre"], state["obstacle_rot"], state["obstacle_half"]
    extent_z = np.einsum("gij,gj->gi", np.abs(rot), half)[:, 2]
    near = np.linalg.norm(centre[:, :2] - support[:2], axis=1) < 0.3
    standing = near & (centre[:, 2] - extent_z > support[2] - 0.01) & (centre[:, 2] + extent_z > support[2] + 0.01)
    standing &= np.asarray(state["obstacle_movable"]) > 0.5  # not the target's own parts (a stove's knob)
    if not standing.any():
        return support
    c, r, h = centre[standing], rot[standing], half[standing]
    height = hi[2] - lo[2]

    def clearance(point: np.ndarray) -> float:
        shift = point[:2] - obj[:2]
        return box_distance(lo[:2] + shift, hi[:2] + shift, support[2], support[2] + height, c, r, h)

    if clearance(support) > 0.01:
        return support
    corners = np.asarray(state["target_corners"], dtype=np.float64)
    mid = corners.mean(0)
    best, best_clear = support, clearance(support)
    for a in np.linspace(0.0, 1.0, 7):
        for b in np.linspace(0.0, 1.0, 7):
            xy = corners[0] + a * (corners[1] - corners[0]) + b * (corners[2] - corners[0])
            inward = mid - xy
            xy = xy + 0.015 * inward / max(np.linalg.norm(inward), 1e-9) * (np.linalg.norm(inward) > 0.015)
            point = np.array([xy[0], xy[1], support[2]])
            value = clearance(point)
            if value > best_clear:
                best, best_clear = point, value
    return best


class ClearExpert(PlaceExpert):
    """Carries an object out of a drawer's way: any free spot will do, so it lets go higher and backs
    off less (goal tasks allow 300 steps for clearing, opening and placing)."""

    retreat_steps = 6
    release_clearance = 0.03

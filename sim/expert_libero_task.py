"""Scripted expert for any LIBERO goal made of On/In, Open/Close and TurnOn/TurnOff predicates.

``LiberoGoalState`` lists the goal's subgoals in the order ``plan_subgoals`` gives (open a drawer
before putting something in it, turn the stove on before the pots go on it, close last), each
with its entries under ``goal<k>/`` and LIBERO's own verdict ``goal<k>/done``. ``LiberoTaskExpert``
works through them: the first subgoal not yet done gets a primitive (``expert_libero_primitives``),
and when that primitive has finished the next one not done follows (a subgoal still not done is
tried again). Before opening a drawer it carries what stands in the drawer's way aside
(``expert_libero_room``).
"""

from __future__ import annotations

import numpy as np

from .expert_libero_primitives import (BASE_KEYS, ClearExpert, DrawerOpenExpert, KnobExpert, PlaceExpert,
                                       PrimitivePhase, PushExpert, SlideExpert, slides)
from .expert_libero_room import free_spot
from .expert_libero_scene import SUBGOAL_KINDS

PRIMITIVES = {"on": PlaceExpert, "in": PlaceExpert, "open": DrawerOpenExpert, "close": PushExpert,
              "turnon": KnobExpert, "turnoff": KnobExpert}


def subgoal_view(state: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Subgoal ``k``'s entries without their ``goal<k>/`` prefix, with the robot's own entries."""
    prefix = f"goal{k}/"
    view = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    view.update({key: state[key] for key in BASE_KEYS if key in state})
    return view


def near_view(state: dict[str, np.ndarray], k: int, j: int, spot: np.ndarray) -> dict[str, np.ndarray] | None:
    """Object ``j`` near drawer ``k`` (``near<j>/`` entries) as a pick-and-place view that puts it at
    ``spot`` on the table; None once it is no longer reported."""
    prefix = f"goal{k}/near{j}/"
    view = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not view:
        return None
    view.update({key: state[key] for key in BASE_KEYS if key in state})
    view["target_support"] = np.asarray(spot, dtype=np.float64)
    view["target_top"] = np.array([spot[2]])
    return view


class LiberoTaskExpert:
    """Works through a LIBERO task's subgoals (``LiberoGoalState``), one primitive at a time; before
    opening a drawer, carries what stands in its way aside (``expert_libero_room``)."""

    max_tries = 3  # per subgoal, before moving on
    max_clears = 2  # per object in a drawer's way

    def __init__(self, noise_std: float = 0.0, seed: int | None = None) -> None:
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.goal: int | None = None
        self.primitive = None
        self._tries = 0
        self._clearing: tuple[int, np.ndarray] | None = None  # (object index, spot) being cleared away
        self._clears: dict[tuple[int, int], int] = {}

    @property
    def phase(self) -> PrimitivePhase:
        if self.primitive is None:
            return PrimitivePhase("start")
        kind = "clear" if self._clearing is not None else type(self.primitive).__name__
        return PrimitivePhase(f"goal {self.goal} {kind} {self.primitive.phase.value}")

    def _new(self, primitive: type) -> object:
        return primitive(noise_std=self.noise_std, seed=int(self._rng.integers(2**31)))

    def _start(self, state: dict[str, np.ndarray], k: int) -> None:
        kind = SUBGOAL_KINDS[int(state[f"goal{k}/kind"][0])]
        if kind == "open" and self._start_clearing(state, k):
            return
        primitive = PRIMITIVES[kind]
        if kind == "on" and slides(subgoal_view(state, k)):
            primitive = SlideExpert
        self.goal, self.primitive = k, self._new(primitive)

    def _start_clearing(self, state: dict[str, np.ndarray], k: int) -> bool:
        """Start carrying the first object in drawer ``k``'s way to a free spot; False if there is none."""
        prefix = f"goal{k}/near"
        ids = sorted({int(key[len(prefix):].split("/")[0]) for key in state if key.startswith(prefix)})
        for j in ids:
            if state[f"{prefix}{j}/in_way"][0] < 0.5 or self._clears.get((k, j), 0) >= self.max_clears:
                continue
            spot = free_spot(near_view(state, k, j, np.zeros(3)), state[f"goal{k}/sweep"],
                             float(state[f"goal{k}/hand_low"][0]))
            if spot is None:
                continue
            self._clears[(k, j)] = self._clears.get((k, j), 0) + 1
            self._clearing = (j, spot)
            self.goal, self.primitive = k, self._new(ClearExpert)
            return True
        return False

    def _next_goal(self, state: dict[str, np.ndarray]) -> int | None:
        count = int(state["goal_count"][0])
        pending = [k for k in range(count) if state[f"goal{k}/done"][0] < 0.5]
        return pending[0] if pending else None

    def act(self, privileged_state: dict[str, np.ndarray]) -> np.ndarray:
        s = privileged_state
        if "goal_count" not in s:
            raise ValueError("LiberoTaskExpert needs LiberoGoalState's entries (a LIBERO env's privileged_state())")
        view = None
        if self._clearing is not None:
            view = near_view(s, self.goal, *self._clearing)
            if view is None or self.primitive.finished:  # cleared, or the drawer no longer needs it
                self._clearing, self.primitive, view = None, None, None
        if view is None and (self.primitive is None or self.primitive.finished):
            k = self._next_goal(s)
            if k is None:  # all done (the episode ends on success): hold still, open
                action = np.zeros(7, dtype=np.float32)
                action[6] = -1.0
                return action
            self._tries = self._tries + 1 if k == self.goal else 0
            if self._tries >= self.max_tries:  # this one keeps failing: try the next pending one
                later = [j for j in range(k + 1, int(s["goal_count"][0])) if s[f"goal{j}/done"][0] < 0.5]
                k, self._tries = (later[0] if later else k), 0
            self._start(s, k)
            if self._clearing is not None:
                view = near_view(s, k, *self._clearing)
        return self.primitive.act(view if view is not None else subgoal_view(s, self.goal))

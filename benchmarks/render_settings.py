"""Cost per frame of each visual setting ``sim/render.py`` switches off, in one scene.

Rows are cumulative, in the order of render.py's table: row i renders with
settings 1..i applied to a fresh copy of the scene's untouched model (model
fields must be set before a renderer is created). "mean abs diff" compares
each row's image with the defaults' image of the same state, in 0..255 units:
what the policy would see differently.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np


def _reflectance(model, renderer, size):
    model.mat_reflectance[:] = 0.0


def _no_msaa(model, renderer, size):
    model.vis.quality.offsamples = 0


def _flags(model, renderer, size):
    if renderer is None:
        return
    import mujoco

    for flag in ("mjRND_SHADOW", "mjRND_SKYBOX", "mjRND_HAZE", "mjRND_REFLECTION"):
        renderer.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0


def _buffer(model, renderer, size):
    model.vis.global_.offwidth = size
    model.vis.global_.offheight = size


def _shadow_map(model, renderer, size):
    model.vis.quality.shadowsize = 0


# (label, change); a change gets (model, None, size) before the renderer exists and
# (model, renderer, size) after, and acts in whichever phase it belongs to.
SETTINGS: list[tuple[str, Callable]] = [
    ("`mat_reflectance = 0`", _reflectance),
    ("`vis.quality.offsamples = 0` (no MSAA)", _no_msaa),
    ("shadow, skybox, haze, reflection flags off", _flags),
    ("offscreen buffer = image size", _buffer),
    ("`vis.quality.shadowsize = 0`", _shadow_map),
]


def describe(model) -> str:
    """The scene's visual facts that decide which settings can matter."""
    return (f"{int((model.mat_reflectance > 0).sum())} of {model.nmat} materials reflective, "
            f"{int(model.light_castshadow.sum())} of {model.nlight} lights cast shadows, "
            f"offsamples {model.vis.quality.offsamples}, offscreen buffer "
            f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}, shadow map {model.vis.quality.shadowsize}, "
            f"{model.nmeshface} mesh faces")


def untouched_copy(env):
    """A copy of ``env``'s model with the visual fields CameraRenderer changed put back.

    A second, freshly built robosuite env would differ in more than those fields:
    resets hide the grip-site markers and LIBERO's stove burner changes colour with
    its state, both through model rgba, so images would differ for reasons other
    than the render settings.
    """
    plain_env = env._make_robosuite_env(env.control_freq)  # built like env's, never touched
    try:
        plain = plain_env.sim.model._model
        model = copy.deepcopy(env._env.sim.model._model)
        model.mat_reflectance[:] = plain.mat_reflectance
        model.vis.quality.offsamples = plain.vis.quality.offsamples
        model.vis.quality.shadowsize = plain.vis.quality.shadowsize
        model.vis.global_.offwidth = plain.vis.global_.offwidth
        model.vis.global_.offheight = plain.vis.global_.offheight
    finally:
        plain_env.close()
    return model


def time_settings(plain_model, data, camera: str, size: int, frames: int) -> list[dict]:
    """One row per cumulative setting: wall and CPU ms/frame, renderer creation ms, mean abs diff to defaults."""
    import mujoco

    option = mujoco.MjvOption()
    option.geomgroup[0] = 0  # collision geoms hidden in every row, as CameraRenderer does
    rows, reference = [], None
    for n in range(len(SETTINGS) + 1):
        model = copy.deepcopy(plain_model)
        applied = SETTINGS[:n]
        for _, change in applied:
            change(model, None, size)
        start = time.perf_counter()
        renderer = mujoco.Renderer(model, size, size)
        create_ms = (time.perf_counter() - start) * 1000
        try:
            for _, change in applied:
                change(model, renderer, size)

            def render():
                renderer.update_scene(data, camera=camera, scene_option=option)
                return renderer.render()

            image = render()  # first frame uploads meshes and textures: off the clock
            times, cpu = [], time.process_time()
            for _ in range(frames):
                start = time.perf_counter()
                render()
                times.append(time.perf_counter() - start)
            # CPU time of all threads (llvmpipe rasterises on its own): steadier than
            # wall time when other jobs share the cores.
            cpu = (time.process_time() - cpu) / frames
        finally:
            renderer.close()
        if reference is None:
            reference = image.astype(np.float32)
        rows.append({
            "setting": "mujoco defaults" if n == 0 else "+ " + SETTINGS[n - 1][0],
            "ms": float(np.median(times)) * 1000,
            "cpu_ms": cpu * 1000,
            "create_ms": create_ms,
            "diff": float(np.abs(image.astype(np.float32) - reference).mean()),
        })
    return rows

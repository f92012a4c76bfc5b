"""Cheap offscreen camera rendering of a MuJoCo scene for policy observations.

robosuite's own camera observations go through its render context and cost
hundreds of ms a frame on this CPU-only machine. We render with
``mujoco.Renderer`` instead, after switching off visual effects that cost CPU
time (Mesa llvmpipe) but add nothing the policy needs.

Measured on robosuite Lift, ``agentview``, 64x64, MUJOCO_GL=egl (Mesa
llvmpipe), 2 shared CPU cores, 2026-11-24; ms per frame (update_scene +
render), medians over rounds, each row adding to the one above:

============================================  ========  ==============================
setting                                       ms/frame  picture
============================================  ========  ==============================
mujoco defaults                               50-76     reference
``mat_reflectance = 0`` (mirror-like table)   22-33     arm's reflection in table gone
``vis.quality.offsamples = 0`` (no MSAA)      12-20     edges aliased, same content
                                                        (mean abs diff 2.6 / 255)
shadow, skybox, haze render flags off         12-19     identical pixels: no light casts
                                                        shadows, no sky in view
offscreen buffer = image size (was 640x480)   12-19     identical; less memory
``vis.quality.shadowsize = 0``                -         identical; at creation saves
                                                        64 MiB and ~150 ms per renderer
============================================  ========  ==============================

``benchmarks/env_steps.py`` re-measures the first and last rows (defaults
49.5 ms vs 11.7 ms at 64x64; 41 ms vs 13 ms at 128x128). What is left is
vertex work for the Panda's ~180k mesh faces: an empty scene renders in
0.6 ms, and image size barely matters (64: 11.5 ms, 128: 13 ms, 224: 16 ms).
``LP_NUM_THREADS=1`` made no difference at 64x64. One renderer holds about
200 MiB of host memory (llvmpipe keeps meshes and textures in RAM), so an
env uses one renderer for all its cameras.

Collision geoms (geom group 0) are hidden, as robosuite does for its camera
observations: drawn, they paint the arm in solid debug colours.

Image conventions (``IMAGE_CONVENTIONS``): ``mujoco.Renderer`` returns the camera's
view upright, i.e. the raw OpenGL read-out (bottom row first, which is what
robosuite's camera observations hold) flipped top-to-bottom. ``"upright"`` keeps that.
``"rot180"`` is the raw read-out rotated by 180 degrees (``raw[::-1, ::-1]``), the
convention of OpenVLA's and openpi's LIBERO code and of the published LIBERO datasets
and checkpoints: the upright view mirrored left-right.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

BACKEND_HELP = (
    "MuJoCo offscreen rendering needs a headless OpenGL backend. Set "
    "MUJOCO_GL=egl (needs the Debian package libegl1, plus libgl1-mesa-dri for "
    "CPU rendering) or MUJOCO_GL=osmesa (needs libosmesa6) before mujoco is "
    "imported. MUJOCO_GL is currently {current!r}."
)


# name -> what it is; LIBERO renders "rot180" by default, robosuite tasks "upright".
IMAGE_CONVENTIONS = {
    "upright": "the camera's view upright: robosuite's raw render flipped top-to-bottom (raw[::-1])",
    "rot180": "robosuite's raw render rotated 180 degrees (raw[::-1, ::-1]), as OpenVLA's and openpi's LIBERO "
              "code and the published LIBERO datasets and checkpoints: the upright view mirrored left-right",
}


def check_image_convention(convention: str) -> str:
    """``convention`` if it names one of IMAGE_CONVENTIONS; ValueError listing them otherwise."""
    if convention not in IMAGE_CONVENTIONS:
        raise ValueError(f"unknown image convention {convention!r}; valid: {', '.join(IMAGE_CONVENTIONS)}")
    return convention


class RenderBackendError(RuntimeError):
    """No usable OpenGL backend for offscreen rendering."""


def backend_error(cause: BaseException | None = None) -> RenderBackendError:
    current = os.environ.get("MUJOCO_GL", "<unset>")
    msg = BACKEND_HELP.format(current=current)
    loaded = _loaded_backend()
    if loaded is not None:
        msg += (
            f" mujoco loaded the {loaded!r} backend: it reads MUJOCO_GL only when first"
            " imported, so import vla.sim (or set MUJOCO_GL) before importing mujoco."
        )
    if cause is not None:
        msg += f" Underlying error: {type(cause).__name__}: {cause}"
    return RenderBackendError(msg)


def _loaded_backend() -> str | None:
    """The GL backend module mujoco chose at import, e.g. 'glfw', or None."""
    gl_context = sys.modules.get("mujoco.gl_context")
    cls = getattr(gl_context, "GLContext", None)
    return None if cls is None else cls.__module__.rsplit(".", 1)[-1]


try:
    # mujoco picks its GL backend at import time from MUJOCO_GL.
    import mujoco
except Exception as exc:  # noqa: BLE001 - any backend failure gets the same advice
    raise backend_error(exc) from exc


def apply_cheap_visual_settings(model: "mujoco.MjModel", height: int, width: int) -> None:
    """Switch off costly visual effects on ``model`` (see the module table).

    Changes only visual fields, never physics. Must run before a renderer is
    created, because the offscreen buffer and shadow map are allocated then.
    """
    model.mat_reflectance[:] = 0.0
    model.vis.quality.offsamples = 0
    model.vis.quality.shadowsize = 0
    model.vis.global_.offwidth = width
    model.vis.global_.offheight = height


def import_triton_before_gl() -> None:
    """Import triton now if it is installed and not loaded yet.

    Importing triton after an EGL context exists in the process crashes it (a segfault inside
    triton's own import, seen on the project's machines whenever a command collected demos and then
    trained in one process). Every renderer calls this before creating its context; it costs about
    0.2 s once per process.
    """
    if "triton" in sys.modules:
        return
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        import triton.language  # noqa: F401


class CameraRenderer:
    """Renders named cameras of one MuJoCo model to uint8 [H, W, 3] images in ``convention``
    (one of IMAGE_CONVENTIONS: "upright", or "rot180", LIBERO's published convention).

    ``frames_rendered`` counts single-camera frames, so callers and tests can
    check how often rendering happens.
    """

    def __init__(
        self,
        model: "mujoco.MjModel",
        cameras: Sequence[str],
        height: int,
        width: int | None = None,
        convention: str = "upright",
    ) -> None:
        width = height if width is None else width
        self.convention = check_image_convention(convention)
        if not cameras:
            raise ValueError("cameras must name at least one camera")
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        available = [model.camera(i).name for i in range(model.ncam)]
        unknown = [c for c in cameras if c not in available]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; this model has {available}")
        self.cameras = tuple(cameras)
        self.height, self.width = height, width
        self.frames_rendered = 0
        self._renderer = None
        apply_cheap_visual_settings(model, height, width)
        import_triton_before_gl()
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except Exception as exc:  # noqa: BLE001 - GL failures surface as many types
            raise backend_error(exc) from exc
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        flags[mujoco.mjtRndFlag.mjRND_HAZE] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._option = mujoco.MjvOption()
        self._option.geomgroup[0] = 0  # collision geoms

    def render_camera(self, data: "mujoco.MjData", camera: str) -> np.ndarray:
        """One camera's image of the current state of ``data``."""
        if self._renderer is None:
            raise RuntimeError("CameraRenderer is closed")
        self._renderer.update_scene(data, camera=camera, scene_option=self._option)
        self.frames_rendered += 1
        image = self._renderer.render()  # a fresh array, upright already
        if self.convention == "rot180":  # raw[::-1, ::-1] == upright[:, ::-1]
            image = np.ascontiguousarray(image[:, ::-1])
        return image

    def render(self, data: "mujoco.MjData") -> dict[str, np.ndarray]:
        """Images of every camera, keyed by camera name."""
        return {cam: self.render_camera(data, cam) for cam in self.cameras}

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "CameraRenderer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

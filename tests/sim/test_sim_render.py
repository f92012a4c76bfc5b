"""CameraRenderer on a tiny MuJoCo scene (no robosuite): fast and exact."""

import os
import subprocess
import sys

import mujoco
import numpy as np
import pytest

from vla.sim import CameraRenderer, RenderBackendError
from vla.sim import render as render_module

# A red box above the camera's optical axis on a grey floor: upright images
# have the red in their top half. Visible geoms are in group 1, robosuite's
# visual group; group 0 (collision) is hidden by the renderer.
SCENE = """
<mujoco>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1"/>
    <geom type="plane" size="2 2 .1" rgba=".5 .5 .5 1" group="1"/>
    <geom name="red" type="box" pos="0 .25 .6" size=".08 .08 .08" rgba="1 0 0 1" group="1"/>
    <geom name="hidden" type="sphere" pos="0 -.25 .3" size=".08" rgba="0 0 1 1" group="0" contype="0"/>
    <camera name="front" pos="0 -1.5 .3" xyaxes="1 0 0 0 0 1"/>
  </worldbody>
</mujoco>
"""


@pytest.fixture()
def scene():
    model = mujoco.MjModel.from_xml_string(SCENE)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return model, data


def _red_mask(img):
    img = img.astype(int)
    return (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)


def test_renders_upright_uint8_and_counts_frames(scene):
    model, data = scene
    with CameraRenderer(model, ["front"], 32, 48) as renderer:
        images = renderer.render(data)
        img = images["front"]
        assert img.shape == (32, 48, 3) and img.dtype == np.uint8
        red_rows = np.nonzero(_red_mask(img).any(axis=1))[0]
        assert red_rows.size > 0, "red box not visible"
        # The box sits above the camera axis: rows near the top (row 0 = top of picture).
        assert red_rows.max() < 14 and red_rows.min() > 2
        assert renderer.frames_rendered == 1
        renderer.render_camera(data, "front")
        assert renderer.frames_rendered == 2
    with pytest.raises(RuntimeError, match="closed"):
        renderer.render(data)
    renderer.close()  # idempotent


def test_rot180_convention_is_the_upright_image_mirrored_left_right(scene):
    """LIBERO's published convention, raw[::-1, ::-1] of the bottom-up OpenGL read-out, is the
    upright image mirrored left-right; a box right of the axis lands in the left half."""
    model, data = scene
    model.geom("red").pos[0] = 0.3  # to the right of the camera's axis
    mujoco.mj_forward(model, data)
    with CameraRenderer(model, ["front"], 32, 48) as upright:
        up = upright.render(data)["front"]
    with CameraRenderer(model, ["front"], 32, 48, convention="rot180") as rotated:
        rot = rotated.render(data)["front"]
    assert rot.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(rot, up[:, ::-1])
    red_cols = np.nonzero(_red_mask(rot).any(axis=0))[0]
    assert red_cols.size > 0 and red_cols.max() < 24
    with pytest.raises(ValueError, match="unknown image convention 'flipped'; valid: upright, rot180"):
        CameraRenderer(model, ["front"], 32, convention="flipped")


def test_cheap_settings_applied_and_collision_group_hidden(scene):
    model, data = scene
    with CameraRenderer(model, ["front"], 40) as renderer:
        img = renderer.render(data)["front"]
    assert model.vis.quality.offsamples == 0
    assert model.vis.global_.offwidth == 40 and model.vis.global_.offheight == 40
    assert np.all(model.mat_reflectance == 0)
    # The blue sphere is in geom group 0 (robosuite's collision group): not drawn.
    blue = (img[..., 2] > 150) & (img[..., 0] < 80)
    assert not blue.any()


def test_unknown_camera_lists_available(scene):
    model, _ = scene
    with pytest.raises(ValueError, match=r"unknown camera.*'nope'.*front"):
        CameraRenderer(model, ["nope"], 16)


def test_backend_failure_names_the_fix(scene, monkeypatch):
    model, _ = scene

    def broken_renderer(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'glGetError'")

    monkeypatch.setattr(render_module.mujoco, "Renderer", broken_renderer)
    with pytest.raises(RenderBackendError) as err:
        CameraRenderer(model, ["front"], 16)
    msg = str(err.value)
    for needle in ("MUJOCO_GL=egl", "MUJOCO_GL=osmesa", "libegl1", "libosmesa6", "glGetError"):
        assert needle in msg


def test_invalid_mujoco_gl_at_import_names_the_fix():
    env = dict(os.environ, MUJOCO_GL="not-a-backend")
    proc = subprocess.run(
        [sys.executable, "-c", "import vla.sim.render"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "RenderBackendError" in proc.stderr
    assert "MUJOCO_GL=egl" in proc.stderr and "libosmesa6" in proc.stderr

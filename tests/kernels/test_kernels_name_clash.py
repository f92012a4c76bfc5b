"""The top-level kernels/ folder must never stand in for Hugging Face's `kernels` package.

transformers imports `kernels` when it builds a model; with the repository root on sys.path
(pytest, `python -c` in the root, a notebook started there) the folder that holds vla.kernels
used to be found first and every model import failed.
"""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from transformers import SiglipVisionConfig, SiglipVisionModel
SiglipVisionModel(SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=16, patch_size=8))
import vla.kernels
assert vla.kernels.flow_sde_step is not None
import kernels
print(getattr(kernels, "__file__", None))
"""


def _run(args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


# Makes Hugging Face's kernels package look uninstalled (no files outside the repository, no metadata),
# as in an environment whose transformers does not pull it in.
HIDE_HUB_KERNELS = f"""
import importlib.machinery, importlib.metadata
_find, _version = importlib.machinery.PathFinder.find_spec, importlib.metadata.version
def _find_spec(name, path=None, target=None):
    if name == "kernels" and path is not None and {str(ROOT)!r} not in path:
        return None
    return _find(name, path, target)
def _no_kernels_version(name):
    if name == "kernels":
        raise importlib.metadata.PackageNotFoundError(name)
    return _version(name)
importlib.machinery.PathFinder.find_spec = _find_spec
importlib.metadata.version = _no_kernels_version
"""


@pytest.mark.parametrize("hub_kernels", ["installed", "not installed"])
@pytest.mark.parametrize("how", ["python -c", "root first on sys.path", "python benchmarks/script.py"])
def test_transformers_model_and_vla_kernels_import_in_the_repository_root(how, hub_kernels):
    probe = PROBE if hub_kernels == "installed" else HIDE_HUB_KERNELS + PROBE
    if how == "python -c":  # sys.path[0] is '' (the working directory, here the root)
        result = _run(["-c", probe])
    elif how == "root first on sys.path":  # pytest's rootdir insertion, a script's path hack
        result = _run(["-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); exec({probe!r})"])
    else:  # a benchmark script: its own folder comes first (no file there may be called kernels.py)
        result = _run(["-c", f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); exec({probe!r})"])
    assert result.returncode == 0, result.stderr[-2000:]
    top_level = result.stdout.strip().splitlines()[-1]
    if hub_kernels == "not installed":
        assert top_level == "None"  # the empty namespace package: transformers treats it as absent
    else:
        assert ROOT / "kernels" not in Path(top_level).resolve().parents, \
            f"`import kernels` still gives the project's folder: {top_level}"


def test_top_level_kernels_is_the_hub_package_when_installed():
    try:  # find_spec would find the project's folder here: the root is on pytest's sys.path
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("Hugging Face's kernels package is not installed")
    result = _run(["-c", "import kernels; print(kernels.__file__, hasattr(kernels, 'CUDAProperties'))"])
    assert result.returncode == 0, result.stderr[-2000:]
    path, has_attr = result.stdout.split()
    assert Path(path).resolve().parent != ROOT / "kernels" and has_attr == "True"

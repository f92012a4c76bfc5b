"""An evaluation-only install (no [train] extra: no pyarrow) can still load and evaluate policies."""

import subprocess
import sys


def test_eval_path_imports_without_pyarrow():
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"  # makes `import pyarrow` fail
        "import vla.cli, vla.eval.evaluate, vla.policy.flow_vla, vla.sim\n"
        "from vla.cli import main\n"
        "assert main(['eval', '--policy=/nonexistent', '--output_dir=/tmp/vla-eval-only-test']) == 2\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "does not exist" in result.stderr

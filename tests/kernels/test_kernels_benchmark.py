"""The kernel benchmark runs on CPU and writes its markdown report."""

import pytest

from vla.kernels import benchmark


def test_benchmark_writes_a_markdown_table(tmp_path, capsys):
    out = tmp_path / "kernels_cpu.md"
    assert benchmark.main(["--sizes", "tiny", "--ops", "vib_sample,flow_sde_step", "--no-compile",
                           "--min-time", "0.001", "--device", "cpu", "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "- device: CPU" in text and "- date: " in text and "- command: `vla bench kernels --sizes tiny" in text
    assert "not measured without CUDA" in text
    rows = [line for line in text.splitlines() if line.startswith("| vib_sample") or line.startswith("| flow_sde")]
    assert [r.split(" | ")[3] for r in rows] == ["fwd", "fwd", "fwd+bwd"]
    eager_ms = [float(r.split(" | ")[4]) for r in rows]
    assert all(ms > 0 for ms in eager_ms)


def test_benchmark_rejects_unknown_names():
    with pytest.raises(SystemExit, match="unknown op"):
        benchmark.main(["--ops", "nope", "--out", "-"])
    with pytest.raises(SystemExit, match="unknown size"):
        benchmark.main(["--sizes", "huge", "--out", "-"])

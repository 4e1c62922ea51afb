"""``ftx doctor``: one screen and one JSON object of what ftx computes on, with a fix for each
problem; it binds the BLAS before MLX loads, like every verb that computes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("mlx")


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("FTX_BLAS", "LD_PRELOAD")}
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", "doctor", *args],
        capture_output=True,
        text=True,
        env=base | env,
    )


@pytest.mark.skipif(sys.platform != "linux", reason="the PyPI BLAS is bound on Linux")
def test_json_names_versions_device_blas_speed_and_binds_before_mlx() -> None:
    done = _doctor("--json", LD_DEBUG="bindings")
    assert done.returncode == 0, done.stderr[-2000:]
    d = json.loads(done.stdout)
    assert d["versions"]["ftx"] and d["versions"]["mlx"] and d["versions"]["mlx-lm"]
    assert d["device"] == "cpu" and d["device_memory"] > 0
    assert d["blas"]["source"].startswith("PyPI scipy-openblas32")
    assert d["gemm_gflops"] > 0 and d["cores"] >= 1 and "stream" in d["streams"]
    assert d["memory_available"] > 0 and d["disk_free"]["working directory"] > 0
    assert d["problems"] == []
    binding = r"libmlx\.so\S* \[\d+\] to (\S+) \[\d+\]: normal symbol `cblas_sgemm'"
    bound = re.findall(binding, done.stderr)
    assert len(bound) == 1 and "_core" in bound[0], bound


@pytest.mark.skipif(sys.platform != "linux", reason="the PyPI BLAS is bound on Linux")
def test_the_bundled_blas_is_a_problem_with_its_fix() -> None:
    done = _doctor(FTX_BLAS="bundled")
    assert done.returncode == 0, done.stderr
    assert "problem" in done.stdout and "scipy-openblas32" in done.stdout
    assert "fix:" in done.stdout and "GFLOP/s" in done.stdout

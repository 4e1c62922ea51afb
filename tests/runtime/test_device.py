"""The per-platform choices, tested without the hardware: a Mac keeps Accelerate and its
weights as they are, a CUDA GPU keeps the quantized base and computes in bfloat16, the CPU
dequantizes into float32 with one stream per core; a GPU never gets CPU streams."""

from __future__ import annotations

import pytest

from ftx.runtime import blas
from ftx.runtime.blas import Blas
from ftx.runtime.device import Kind, auto_compute_dtype, auto_dequantize
from ftx.runtime.streams import choose_streams


@pytest.mark.parametrize(
    ("kind", "dequantize", "dtype"),
    [("cpu", True, "float32"), ("cuda", False, "bfloat16"), ("metal", False, None)],
)
def test_training_defaults_per_device(kind: Kind, dequantize: bool, dtype: str | None) -> None:
    assert auto_dequantize(kind) is dequantize
    assert auto_compute_dtype(kind) == dtype


def test_macos_keeps_accelerate_and_binds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blas.sys, "platform", "darwin")
    monkeypatch.setenv("FTX_BLAS", "/nonexistent/libopenblas.so")  # ignored on macOS
    chosen = blas._choose()
    assert (chosen.name, chosen.path, chosen.fast) == ("accelerate", None, True)
    # Accelerate sets its own threads: one stream, no BLAS threads touched.
    plan = choose_streams("auto", 4, 8, False, chosen)
    assert (plan.count, plan.blas_threads) == (1, None)


def test_a_gpu_runs_one_stream_whatever_the_cores() -> None:
    packaged = Blas("openblas", "PyPI scipy-openblas32", "/x/libscipy_openblas.so", "scipy_")
    for setting in ("auto", 4):
        plan = choose_streams(setting, 8, 16, True, packaged)
        assert (plan.count, plan.blas_threads) == (1, None)

"""Parallel CPU streams: which count ``auto`` picks, and that a run on two streams computes
what a run on one computes (the same rows, the same mean over tokens), with the BLAS handed
back as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ftx.runtime.blas import Blas, blas_threads, use_fast_blas
from ftx.runtime.streams import choose_streams
from ftx.training.metrics import read_metrics

Make = Callable[..., dict[str, Any]]

OPENBLAS = Blas("openblas", "system", "/usr/lib/libopenblas.so.0")


@pytest.mark.parametrize(
    ("setting", "batch", "cores", "gpu", "blas", "count", "threads"),
    [
        ("auto", 4, 2, False, OPENBLAS, 2, 1),  # a stream per core, one BLAS thread each
        ("auto", 4, 4, False, OPENBLAS, 4, 1),
        ("auto", 4, 8, False, OPENBLAS, 1, None),  # more cores than rows: threaded matmuls
        ("auto", 4, 1, False, OPENBLAS, 1, None),
        ("auto", 4, 2, True, OPENBLAS, 1, None),  # a GPU runs its own parallel kernels
        ("auto", 4, 2, False, Blas("bundled", "mlx wheel"), 2, None),  # single-threaded already
        ("auto", 4, 2, False, Blas("accelerate", "macOS"), 1, None),  # threads not ftx's to set
        (3, 1, 2, False, OPENBLAS, 3, 1),  # asked for: taken as given
        (1, 4, 2, False, OPENBLAS, 1, None),
        (2, 4, 2, True, OPENBLAS, 1, None),
    ],
)
def test_the_stream_count_and_blas_threads(
    setting: int | str, batch: int, cores: int, gpu: bool, blas: Blas, count: int, threads: int
) -> None:
    chosen = choose_streams(setting, batch, cores, gpu, blas)
    assert (chosen.count, chosen.blas_threads) == (count, threads)
    assert chosen.describe().startswith(f"{count} stream")


@pytest.mark.mlx
def test_two_streams_train_what_one_stream_trains(make_config: Make, tmp_path: Path) -> None:
    import mlx.core as mx

    from ftx import train

    blas = use_fast_blas()
    threads_before = blas_threads(blas, None)
    common = {"iters": 3, "report_every": 1, "save_every": None, "batch_size": 4}
    runs = {n: make_config(out=tmp_path / f"s{n}", cpu_streams=n, **common) for n in (1, 2)}
    reports = {2: train(runs[2])}
    # Training hands the caller's process its BLAS threads back.
    assert blas_threads(blas, None) == threads_before
    # One stream with the one-thread BLAS that two streams get: the runs then differ only in
    # how the rows are split, so equal bits would mean the second stream was never used.
    blas_threads(blas, 1)
    try:
        reports[1] = train(runs[1])
    finally:
        blas_threads(blas, threads_before)
    assert reports[1].streams.startswith("1 stream ")
    assert reports[2].streams.startswith("2 streams")

    one, two = (
        [r for r in read_metrics(tmp_path / f"s{n}" / "metrics.jsonl") if "event" not in r]
        for n in (1, 2)
    )
    assert len(one) == len(two) == 3
    assert [a["grad_norm"] for a in one] != [b["grad_norm"] for b in two]
    for a, b in zip(one, two, strict=True):
        # Same rows, summed in another grouping: equal up to float32 rounding.
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert reports[1].trained_tokens == reports[2].trained_tokens
    assert reports[1].val_loss == pytest.approx(reports[2].val_loss, rel=1e-5)
    w1, w2 = (mx.load(str(tmp_path / f"s{n}" / "adapters.safetensors")) for n in (1, 2))
    assert w1.keys() == w2.keys()
    for k in w1:
        np.testing.assert_allclose(np.array(w1[k]), np.array(w2[k]), rtol=1e-3, atol=1e-6)

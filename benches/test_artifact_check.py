"""What checking an artifact where it is read costs (issue 17, item 2), against what it guards.

Every `ftx train`, `evaluate` and `fuse` opens its data through `ftx.load_dataset`, which checks
each array's size and xxh3 digest against the manifest, the dtypes, the offsets, the mask values
and every token id against the model's embedding rows. This measures that on the standard corpus
prepared four times over (Qwen3), beside reading the same arrays once with NumPy (the floor: any
check must read every byte) and beside `ftx prepare` of the same data. No target: the numbers are
reported so that a change that makes the check dearer shows.
Run: make bench (or: pytest benches/test_artifact_check.py -s)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from _corpus import CACHE, model_dir
from test_prepare_throughput import run_ftx

import ftx
from ftx.data import read_manifest

QWEN3_EMBEDDING_ROWS = 151_936  # Qwen3's config.json `vocab_size`, above its tokenizer's ids


def _best(fn: Any, rounds: int = 3) -> float:
    """The fastest of ``rounds`` warm runs: the files are in the page cache after the first."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def test_artifact_check_cost(benchmark: Any, corpus_4x: Path) -> None:
    model = model_dir("qwen3")
    out = CACHE / "check-4x"
    prepared = run_ftx(corpus_4x, model, out)
    arrays = sorted(out.glob("*.npy"))
    size = sum(p.stat().st_size for p in arrays)

    def read_once() -> None:
        for p in arrays:
            np.load(p, mmap_mode="r").sum()

    def checked() -> None:
        for split in read_manifest(out).splits:
            ftx.load_dataset(out, split, vocab_rows=QWEN3_EMBEDDING_ROWS)

    floor = _best(read_once)
    check = benchmark.pedantic(_best, (checked,), rounds=1)
    benchmark.extra_info.update(
        {"bytes": size, "check_s": check, "read_s": floor, "prepare_s": prepared["seconds"]}
    )
    print(
        f"\nartifact check: {size / 1e6:,.0f} MB of arrays ({prepared['tokens']:,} tokens) in "
        f"{check * 1e3:,.0f} ms ({size / check / 1e9:.2f} GB/s), "
        f"{check / floor:.2f}x one NumPy read of the same arrays, "
        f"{100 * check / prepared['seconds']:.1f}% of the {prepared['seconds']:.1f} s prepare"
    )
    assert len(ftx.load_dataset(out, "train")) > 0

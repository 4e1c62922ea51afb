"""How many MLX streams compute a micro-batch at once on CPU, and with how many BLAS threads.

MLX's CPU backend runs every element-wise op (softmax, SiLU, norms, the adapters' adds) on its
stream's one thread and hands only matmuls to the BLAS. With one stream and a two-thread BLAS,
the second core computes half of each matmul and spins through everything else, which is about
half of a LoRA step. Each MLX stream has a thread of its own, so ftx cuts a micro-batch's rows
into shards, one per core, computed at once on their own streams, each with a single-threaded
BLAS: every core runs the whole of its shard. On the 51M-parameter bench model (2 cores) that
is 291 against 216 trained tokens/s, and steadier.

The shards' gradients are summed, which changes float rounding only, as the ranks of data
parallelism do; a given number of streams computes the same bits every run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ftx.runtime.blas import Blas

# BLAS libraries whose threads ftx can set to one (the bundled one has a single thread).
CONTROLLED = ("openblas", "bundled")


@dataclass(frozen=True)
class Streams:
    """``count`` streams; ``blas_threads``: what the BLAS is set to for the run (None: as is)."""

    count: int
    blas_threads: int | None
    why: str

    def describe(self) -> str:
        threads = "" if self.blas_threads is None else f" x {self.blas_threads} BLAS thread"
        return f"{self.count} stream{'s' if self.count > 1 else ''}{threads} ({self.why})"


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose_streams(
    setting: int | str, batch_size: int, n_cores: int, gpu: bool, blas: Blas
) -> Streams:
    """``setting``: ``cpu_streams`` of the config (a count, or "auto").

    Auto takes one stream per core where every core gets rows (cores <= batch_size) and ftx
    can make the BLAS single-threaded; otherwise one stream with the BLAS's own threads, as
    before (a machine with more cores than rows keeps its multi-threaded matmuls)."""
    if gpu:
        return Streams(1, None, "GPU")
    single = 1 if blas.name == "openblas" else None
    if isinstance(setting, int):
        return Streams(setting, single if setting > 1 else None, "cpu_streams")
    if blas.name not in CONTROLLED:
        return Streams(1, None, f"auto: {blas.name} sets its own threads")
    if n_cores < 2 or n_cores > batch_size:
        return Streams(1, None, f"auto: {n_cores} cores, batch_size {batch_size}")
    return Streams(n_cores, single, f"auto: one per core of {n_cores}")

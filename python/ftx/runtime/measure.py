"""What ``ftx doctor`` asks MLX itself: the default device, its memory, a GEMM's speed.

Imports MLX through the door (the BLAS first); ``doctor`` imports this module only where MLX is
installed.
"""

from __future__ import annotations

import time
from typing import Any

from ftx.runtime.mlx import mx


def on_cpu() -> bool:
    return bool(mx.default_device() == mx.cpu)


def device_memory() -> int | None:
    """The default device's memory, None where MLX does not say."""
    try:
        info: dict[str, Any] = mx.device_info()
    except (AttributeError, RuntimeError):  # older MLX, or a backend that does not say
        return None
    return int(info.get("memory_size", 0)) or None


def gemm_gflops(seconds: float = 1.0, n: int = 1024) -> float:
    """float32 GEMM GFLOP/s of MLX's CPU device with the BLAS bound now (best of the repeats
    that fit in ``seconds``)."""
    with mx.stream(mx.cpu):
        a = mx.random.normal((n, n))
        b = mx.random.normal((n, n))
        mx.eval(a, b, a @ b)  # the first call pays for allocation and the BLAS's threads
        best, end = 0.0, time.perf_counter() + seconds
        while True:
            t = time.perf_counter()
            mx.eval(a @ b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
            if time.perf_counter() > end:
                return best / 1e9

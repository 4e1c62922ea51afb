"""Which device MLX computes on, and the training defaults that are fastest there.

The choices are pure functions of the device's kind, so each platform's defaults are tested on
any machine. On CPU, MLX's GEMM runs through BLAS only for float32, while half precision and
quantized matmuls take slow paths: the base is dequantized and computed in float32. On a GPU the
quantized base is kept (less memory, fast kernels); CUDA computes in bfloat16, which its tensor
cores run natively; Metal keeps the weights as they are, as it always has.
"""

from __future__ import annotations

import sys
from typing import Literal

Kind = Literal["cpu", "metal", "cuda"]


def kind_of(on_cpu: bool) -> Kind:
    """The kind of a device MLX computes on (``on_cpu``: MLX's default device is its CPU)."""
    if on_cpu:
        return "cpu"
    return "metal" if sys.platform == "darwin" else "cuda"


def auto_dequantize(kind: Kind) -> bool:
    """Whether ``dequantize_base: auto`` dequantizes a quantized base on this device."""
    return kind == "cpu"


def auto_compute_dtype(kind: Kind) -> str | None:
    """The dtype ``compute_dtype: auto`` casts the frozen float weights to (None: kept)."""
    return {"cpu": "float32", "cuda": "bfloat16", "metal": None}[kind]

"""``ftx.convert``: a GGUF file in, an mlx-lm model folder out.

The face of ``ftx convert`` (no MLX); ``conversion`` does the work. The folder holds
``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json`` and
``ftx_convert.json`` (what produced it, from which file). It is built in a temporary folder
beside ``out`` and renamed into place, so ``out`` is either the old folder or the complete new
one, never half written.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftx.errors import FtxFileNotFoundError
from ftx.staged_folder import check_free

MANIFEST = "ftx_convert.json"


@dataclass(frozen=True)
class ConvertReport:
    """What ``convert`` did. ``manifest`` is the full ``ftx_convert.json`` content."""

    out_dir: Path
    seconds: float
    architecture: str
    parameters: int
    # tensor kind ("q4", "q8", "q4->f16", "q6_k->f32", "f16", "f32") -> number of tensors
    tensors: dict[str, int]
    quantization: dict[str, Any] | None
    vocab_size: int
    tokenizer: str
    bytes_written: int
    manifest: dict[str, Any] = field(repr=False)


def convert(
    gguf: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dequantize: bool = False,
    dtype: str | None = None,
    force: bool = False,
) -> ConvertReport:
    """Converts a GGUF file (llama, qwen2, qwen3, gemma2, gemma3 or phi3 architecture) into an
    mlx-lm model folder at ``out``.

    Q4_0, Q4_1 and Q8_0 tensors stay quantized (MLX's own format, repacked without loss) unless
    ``dequantize`` is set; F16/BF16/F32 tensors are written as float, and so are Q5_0, Q5_1
    and the K-quants, dequantized. ``dtype`` (float16,
    bfloat16, float32) is the type of the float tensors and of the quantization scales; by
    default float32 when MLX runs on the CPU, else the file's own precision. ``out`` must not
    exist unless ``force`` is set, in which case it is replaced.
    """
    start = time.perf_counter()
    src, dst = Path(gguf), Path(out)
    if not src.is_file():
        raise FtxFileNotFoundError(f"{src}: no such GGUF file")
    check_free(dst, force, (src,))

    from ftx.gguf import conversion

    return conversion.convert(src, dst, dequantize, dtype, force, start)

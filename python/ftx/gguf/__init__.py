"""``ftx.convert``: a GGUF file in, an mlx-lm model folder out.

The folder holds ``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json`` and ``ftx_convert.json`` (what produced it, from which file). It is
built in a temporary folder beside ``out`` and renamed into place, so ``out`` is either the old
folder or the complete new one, never half written.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from ftx.errors import ConfigError, FtxFileNotFoundError
from ftx.files import sha256_file
from ftx.gguf.tokenizer import GGUFVocab, tokenizer_config, tokenizer_json
from ftx.staged_folder import check_free, staged_folder, write_json

MANIFEST = "ftx_convert.json"


@dataclass(frozen=True)
class ConvertReport:
    """What ``convert`` did. ``manifest`` is the full ``ftx_convert.json`` content."""

    out_dir: Path
    seconds: float
    architecture: str
    parameters: int
    # tensor kind ("q4", "q8", "q4->f16", "f16", "f32") -> number of tensors
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
    """Converts a llama-architecture GGUF file into an mlx-lm model folder at ``out``.

    Q4_0, Q4_1 and Q8_0 tensors stay quantized (MLX reads those blocks losslessly) unless
    ``dequantize`` is set; F16/BF16/F32 tensors are written as float. ``dtype`` (float16,
    bfloat16, float32) is the type of the float tensors and of the quantization scales; by
    default float32 when MLX runs on the CPU, else the file's own precision. ``out`` must not
    exist unless ``force`` is set, in which case it is replaced.
    """
    start = time.perf_counter()
    src, dst = Path(gguf), Path(out)
    if not src.is_file():
        raise FtxFileNotFoundError(f"{src}: no such GGUF file")
    check_free(dst, force, (src,))
    arrays, meta = _load(src)
    vocab = GGUFVocab(meta)

    from ftx.gguf.model import to_mlx

    dtype = dtype or default_dtype(arrays)
    model = to_mlx(arrays, meta, dequantize=dequantize, dtype=dtype)
    model.config["bos_token_id"] = vocab.bos
    model.config["eos_token_id"] = vocab.end_of_turn_ids()
    manifest = {
        "ftx_version": _version(),
        "command": "convert",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "file": src.name,
            "path": os.path.relpath(src.resolve(), dst.resolve()),
            "bytes": src.stat().st_size,
            "sha256": sha256_file(src),
        },
        "options": {"dequantize": dequantize, "dtype": dtype},
        "model": {
            "architecture": model.config["model_type"],
            "parameters": model.parameters,
            "tensors": model.tensor_kinds,
            "quantization": model.config.get("quantization"),
        },
        "tokenizer": {"model": vocab.kind, "pre": vocab.pre_name, "vocab_size": len(vocab.tokens)},
    }
    written = _write_folder(dst, force, model.weights, model.config, meta, manifest)
    return ConvertReport(
        out_dir=dst,
        seconds=time.perf_counter() - start,
        architecture=model.config["model_type"],
        parameters=model.parameters,
        tensors=model.tensor_kinds,
        quantization=model.config.get("quantization"),
        vocab_size=len(vocab.tokens),
        tokenizer=vocab.kind if vocab.kind == "llama" else f"{vocab.kind}/{vocab.pre_name}",
        bytes_written=written,
        manifest=manifest,
    )


def default_dtype(arrays: dict[str, Any]) -> str:
    """float32 on the CPU, where MLX computes half precision in software (its quantized matmul
    with float16 scales runs ~30x slower than with float32 ones); else the file's precision."""
    import mlx.core as mx  # type: ignore[import-not-found, unused-ignore]

    from ftx.gguf.model import native_dtype

    if mx.default_device() == mx.cpu:
        return "float32"
    return native_dtype(arrays)


def _load(src: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import mlx.core as mx  # type: ignore[import-not-found, unused-ignore]

    try:
        loaded = mx.load(str(src), return_metadata=True)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"{src}: MLX cannot read this GGUF file ({e}); it reads F32, F16, BF16, Q4_0, Q4_1 "
            "and Q8_0 tensors, so requantize K-quants first (llama-quantize "
            "--allow-requantize IN OUT Q8_0)"
        ) from e
    arrays, meta = cast("tuple[dict[str, Any], dict[str, Any]]", loaded)
    return arrays, {k: _plain(v) for k, v in meta.items()}


def _plain(value: Any) -> Any:
    """Metadata as Python values: MLX hands numbers and numeric arrays back as ``mx.array``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _write_folder(
    dst: Path,
    force: bool,
    weights: dict[str, Any],
    config: dict[str, Any],
    meta: dict[str, Any],
    manifest: dict[str, Any],
) -> int:
    import mlx.core as mx  # type: ignore[import-not-found, unused-ignore]

    with staged_folder(dst, force) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        write_json(tmp / "config.json", config)
        write_json(tmp / "tokenizer.json", tokenizer_json(meta), indent=None)
        write_json(tmp / "tokenizer_config.json", tokenizer_config(meta))
        manifest["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST, manifest)
        written = sum(p.stat().st_size for p in tmp.iterdir())
    return written


def _version() -> str:
    from ftx import __version__

    return __version__

"""The work of ``ftx convert`` once its face (``ftx.gguf``) has checked the paths: MLX reads the
GGUF file, ``model`` maps its tensors, ``tokenizer`` its vocabulary, and the folder is written.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from ftx.runtime.mlx import mx

from ftx import __version__
from ftx.errors import ConfigError
from ftx.files import sha256_file
from ftx.gguf import MANIFEST, ConvertReport
from ftx.gguf.model import native_dtype, to_mlx
from ftx.gguf.tokenizer import GGUFVocab, tokenizer_config, tokenizer_json
from ftx.staged_folder import staged_folder, write_json


def convert(
    src: Path, dst: Path, dequantize: bool, dtype: str | None, force: bool, start: float
) -> ConvertReport:
    """``ftx.gguf.convert`` after its checks."""
    arrays, meta = read_gguf(src)
    vocab = GGUFVocab(meta)

    dtype = dtype or default_dtype(arrays)
    model = to_mlx(arrays, meta, dequantize=dequantize, dtype=dtype)
    model.config["bos_token_id"] = vocab.bos
    model.config["eos_token_id"] = vocab.end_of_turn_ids()
    manifest = {
        "ftx_version": __version__,
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
    if mx.default_device() == mx.cpu:
        return "float32"
    return native_dtype(arrays)


def read_gguf(src: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors and the metadata (as Python values) of a GGUF file, read by MLX."""
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
    with staged_folder(dst, force) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        write_json(tmp / "config.json", config)
        write_json(tmp / "tokenizer.json", tokenizer_json(meta), indent=None)
        write_json(tmp / "tokenizer_config.json", tokenizer_config(meta))
        manifest["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST, manifest)
        written = sum(p.stat().st_size for p in tmp.iterdir())
    return written

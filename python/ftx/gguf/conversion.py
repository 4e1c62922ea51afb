"""The work of ``ftx convert`` once its face (``ftx.gguf``) has checked the paths: ``reader``
reads the GGUF file, ``model`` maps its tensors, ``tokenizer`` its vocabulary, and the folder is
written, then loaded by mlx-lm (lazily: names, shapes, config) before it replaces ``out``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx

from mlx_lm.utils import load_model

from ftx import __version__
from ftx.errors import ConfigError
from ftx.files import sha256_file
from ftx.gguf import MANIFEST, ConvertReport
from ftx.gguf.model import architecture, native_dtype, to_mlx
from ftx.gguf.reader import RawTensor, read_gguf
from ftx.gguf.tokenizer import GGUFVocab, tokenizer_config, tokenizer_json
from ftx.staged_folder import staged_folder, write_json


def convert(
    src: Path, dst: Path, dequantize: bool, dtype: str | None, force: bool, start: float
) -> ConvertReport:
    """``ftx.gguf.convert`` after its checks. Every ConfigError names ``src``."""
    try:
        return _convert(src, dst, dequantize, dtype, force, start)
    except ConfigError as e:
        if str(e).startswith(str(src)):
            raise
        raise ConfigError(f"{src}: {e}") from e


def _convert(
    src: Path, dst: Path, dequantize: bool, dtype: str | None, force: bool, start: float
) -> ConvertReport:
    file = read_gguf(src)
    meta = file.meta
    architecture(meta)
    vocab = GGUFVocab(meta)

    embedding = file.tensors.get("token_embd.weight")
    # before any tensor is dequantized
    if embedding is not None and len(vocab.tokens) != embedding.shape[0]:
        raise ConfigError(
            f"the vocabulary (tokenizer.ggml.tokens) has {len(vocab.tokens):,} tokens but "
            f"token_embd.weight has {embedding.shape[0]:,} rows: the tokenizer and the weights "
            "disagree"
        )
    dtype = dtype or default_dtype(file.tensors)
    model = to_mlx(file.tensors, meta, dequantize=dequantize, dtype=dtype)
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


def default_dtype(tensors: Mapping[str, RawTensor]) -> str:
    """float32 on the CPU, where MLX computes half precision in software (its quantized matmul
    with float16 scales runs ~30x slower than with float32 ones); else the file's precision."""
    if mx.default_device() == mx.cpu:
        return "float32"
    return native_dtype(tensors)


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
        try:
            # mlx-lm's own loader, lazily: every name, shape and config key it needs, no compute
            load_model(tmp, lazy=True)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"the converted weights do not fit mlx-lm's {config['model_type']} model: {e}"
            ) from e
        manifest["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST, manifest)
        written = sum(p.stat().st_size for p in tmp.iterdir())
    return written

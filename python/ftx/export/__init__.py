"""``ftx.export``, the face of ``ftx fuse`` (options, checks, report; no MLX). An adapter and its
base become one deployable artifact: a fused MLX model (float, dequantized or re-quantized), a
GGUF, or a PEFT adapter.

Quantized bases. A merged weight ``W + delta`` is not on the base's quantization grid, and a
LoRA's ``delta`` is mostly smaller than half a 4-bit step: re-quantized, the merged layers fall
back onto (or near) the base's codes and the fine-tune is lost, or, on fresh levels, the whole
model moves (on SmolLM2-135M, Q4_1 GGUF base: test perplexity +27% with fresh 4-bit levels).
So by default the fused model of a quantized base is written in float (the base's scale dtype,
or ``--dtype``): lossless, and the report says so. ``--quantize N`` re-quantizes on request;
layers whose base had that same setting are rounded onto the base's own levels when that is
closer (untouched layers get their codes back bit for bit), and every layer's error and the
perplexity change (``--data``) are reported, with warnings. In every case ``config.json``'s
``quantization`` / ``quantization_config`` entries are rewritten from the layers actually
saved, so no stale entry survives.

Every output folder is written in a staging folder and renamed into place, and holds
``ftx_fuse.json``: base and adapter paths with the sha256 of their weights, the training run's
manifest, the options, and the report.

The package: this face, ``fusing`` (the work: base + adapter to the written folder), ``merge``
(adapter layers into the base weights), ``quantization`` (re-quantizing onto the base's grid),
``peft_adapter`` (the PEFT writer) and ``perplexity`` (the loss that ``--data`` reports). GGUF
files are written by ``ftx.gguf.write``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftx.data import read_manifest
from ftx.errors import ConfigError, FtxFileNotFoundError
from ftx.staged_folder import check_free

if TYPE_CHECKING:
    from ftx.export.perplexity import SplitLoss
    from ftx.export.quantization import LayerError

FORMATS = ("mlx", "gguf", "peft")
QUANTIZE_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
FLOAT_DTYPES = ("float16", "bfloat16", "float32")
PROVENANCE = "ftx_fuse.json"
# Files of a model folder that the fused model replaces instead of copying.
REPLACED = ("config.json", "model.safetensors.index.json", PROVENANCE)


@dataclass(frozen=True)
class FuseOptions:
    format: str = "mlx"
    dequantize: bool = False
    quantize: int | None = None
    group_size: int | None = None
    dtype: str | None = None
    data: Path | None = None
    split: str = "test"
    max_length: int = 2048
    force: bool = False

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format = {self.format}: one of {', '.join(FORMATS)}")
        if self.dequantize and self.quantize is not None:
            raise ConfigError("dequantize and quantize: choose one")
        if self.quantize is not None and self.quantize not in QUANTIZE_BITS:
            raise ConfigError(f"quantize = {self.quantize}: one of {QUANTIZE_BITS}")
        if self.group_size is not None and self.quantize is None:
            raise ConfigError(f"group_size = {self.group_size}: only used with quantize")
        if self.group_size is not None and self.format == "gguf":
            raise ConfigError("group_size: GGUF's Q8_0 has fixed blocks of 32")
        if self.group_size is not None and self.group_size not in GROUP_SIZES:
            raise ConfigError(f"group_size = {self.group_size}: one of {GROUP_SIZES}")
        if self.dtype is not None and self.dtype not in FLOAT_DTYPES:
            raise ConfigError(f"dtype = {self.dtype}: one of {', '.join(FLOAT_DTYPES)}")
        if self.format == "peft" and (self.dequantize or self.quantize or self.dtype):
            raise ConfigError("format = peft writes the adapter as trained: no (de)quantize/dtype")
        if self.format == "gguf" and self.quantize == 4:
            raise ConfigError("format = gguf: F16, F32 (--dtype float32) or Q8_0 (--quantize 8)")
        if self.format == "gguf" and self.dtype == "bfloat16":
            raise ConfigError("format = gguf: dtype float16 or float32")
        if self.data is not None and self.format == "peft":
            raise ConfigError("data: a PEFT export is not evaluated (nothing is quantized)")

    def gguf_type(self) -> str:
        return "q8_0" if self.quantize == 8 else "f32" if self.dtype == "float32" else "f16"


@dataclass(frozen=True)
class FuseReport:
    out: Path
    format: str
    fine_tune_type: str
    fused_layers: int
    base_quantization: str
    output_quantization: str
    dtype: str
    files: list[str]
    layer_errors: list[LayerError] = field(default_factory=list)
    float_loss: SplitLoss | None = None
    quantized_loss: SplitLoss | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def perplexity_change(self) -> float | None:
        """Relative change of test perplexity, quantized over float fused."""
        if self.float_loss is None or self.quantized_loss is None:
            return None
        return self.quantized_loss.perplexity / self.float_loss.perplexity - 1.0

    @property
    def max_relative_error(self) -> float | None:
        return max((e.relative_error for e in self.layer_errors), default=None)

    def to_dict(self) -> dict[str, Any]:
        def loss(s: SplitLoss | None) -> dict[str, float] | None:
            return (
                None
                if s is None
                else {"loss": s.loss, "perplexity": s.perplexity, "tokens": s.tokens}
            )

        return {
            "out": str(self.out),
            "format": self.format,
            "fine_tune_type": self.fine_tune_type,
            "fused_layers": self.fused_layers,
            "base_quantization": self.base_quantization,
            "output_quantization": self.output_quantization,
            "dtype": self.dtype,
            "files": self.files,
            "max_relative_error": self.max_relative_error,
            "layer_errors": [e.to_dict() for e in self.layer_errors],
            "float_fused": loss(self.float_loss),
            "quantized": loss(self.quantized_loss),
            "perplexity_change": self.perplexity_change,
            "warnings": self.warnings,
            "seconds": self.seconds,
        }


def fuse(
    model: str | Path, adapter: str | Path, out: str | Path, options: FuseOptions | None = None
) -> FuseReport:
    """Merges the adapter of ``adapter`` (mlx-lm's format, as ``ftx train`` writes it) into the
    base ``model`` and writes ``out`` in ``options.format``; see the module docstring."""
    start = time.perf_counter()
    opts = options or FuseOptions()
    opts.check()
    model, adapter, out = Path(model), Path(adapter), Path(out)
    if not model.is_dir():
        raise FtxFileNotFoundError(f"model = {model}: no such folder")
    check_free(out, opts.force, (model, adapter))
    if opts.data is not None:
        _check_data(opts.data, opts.split, model)

    from ftx.export import fusing

    return fusing.fuse(model, adapter, out, opts, start)


def _check_data(data: Path, split: str, model: Path) -> None:
    """The split exists and was tokenized with this model's tokenizer (else its perplexity
    means nothing)."""
    manifest = read_manifest(data)
    if split not in manifest.splits:
        raise ConfigError(f"split = {split}: {data} has {sorted(manifest.splits)}")
    if why := manifest.check_tokenizer(model):
        raise ConfigError(f"data = {data}: {why}")

"""``ftx.fuse``: the Python face of ``ftx fuse``. An adapter and its base become one deployable
artifact: a fused MLX model (float, dequantized or re-quantized), a GGUF, or a PEFT adapter.

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
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftx.errors import ConfigError, FtxFileNotFoundError

if TYPE_CHECKING:
    from ftx.export.merge import FusedLayer, Grid
    from ftx.export.perplexity import SplitLoss
    from ftx.export.quantization import LayerError

FORMATS = ("mlx", "gguf", "peft")
QUANTIZE_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
FLOAT_DTYPES = ("float16", "bfloat16", "float32")
PROVENANCE = "ftx_fuse.json"
RUN_MANIFEST = "manifest.json"
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


def _weights_sha(folder: Path) -> dict[str, str]:
    from ftx.files import sha256_file

    return {f.name: sha256_file(f) for f in sorted(folder.glob("*.safetensors"))}


def _run_manifest(adapter: Path) -> dict[str, Any] | None:
    path = adapter / RUN_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return manifest


def _describe(specs: Any) -> str:
    settings = sorted({f"{s.bits}-bit, group {s.group_size}, {s.mode}" for s in specs})
    return "; ".join(settings) if settings else "float"


def _copy_model_files(base: Path, out: Path) -> None:
    """Tokenizer, chat template, generation config...: every file but weights and config."""
    for f in sorted(base.iterdir()):
        if (
            f.is_file()
            and not f.name.startswith(".")
            and f.suffix != ".safetensors"
            and (f.name not in REPLACED)
        ):
            shutil.copy2(f, out / f.name)


def fuse(
    model: str | Path, adapter: str | Path, out: str | Path, options: FuseOptions | None = None
) -> FuseReport:
    """Merges the adapter of ``adapter`` (mlx-lm's format, as ``ftx train`` writes it) into the
    base ``model`` and writes ``out`` in ``options.format``; see the module docstring."""
    from ftx.runtime.blas import use_fast_blas
    from ftx.staged_folder import check_free

    start = time.perf_counter()
    opts = options or FuseOptions()
    opts.check()
    model, adapter, out = Path(model), Path(adapter), Path(out)
    if not model.is_dir():
        raise FtxFileNotFoundError(f"model = {model}: no such folder")
    check_free(out, opts.force, (model, adapter))
    use_fast_blas()

    from ftx.export.merge import read_adapter_config

    adapter_config = read_adapter_config(adapter)
    if opts.data is not None:
        _check_data(opts.data, opts.split, model)
    provenance: dict[str, Any] = {
        "format": "ftx-fuse",
        "created": datetime.now(timezone.utc).isoformat(),
        "command": sys.argv,
        "base": {"path": str(model.resolve()), "weights_sha256": _weights_sha(model)},
        "adapter": {
            "path": str(adapter.resolve()),
            "weights_sha256": _weights_sha(adapter),
            "adapter_config": adapter_config,
        },
        "run": _run_manifest(adapter),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
    }
    return _fuse(model, adapter, out, opts, adapter_config, provenance, start)


def _check_data(data: Path, split: str, model: Path) -> None:
    """The split exists and was tokenized with this model's tokenizer (else its perplexity
    means nothing)."""
    from ftx.data import read_manifest

    manifest = read_manifest(data)
    if split not in manifest.splits:
        raise ConfigError(f"split = {split}: {data} has {sorted(manifest.splits)}")
    if why := manifest.check_tokenizer(model):
        raise ConfigError(f"data = {data}: {why}")


def _fuse(
    model_dir: Path,
    adapter: Path,
    out: Path,
    opts: FuseOptions,
    adapter_config: dict[str, Any],
    provenance: dict[str, Any],
    start: float,
) -> FuseReport:
    from ftx import __version__
    from ftx.export.merge import base_grids, load_adapter_into, load_base, quantized_specs
    from ftx.tuner.model import float_dtype

    provenance["ftx_version"] = __version__
    model, config = load_base(model_dir)
    job = _Job(
        model=model,
        config=config,
        model_dir=model_dir,
        out=out,
        opts=opts,
        kind=str(adapter_config.get("fine_tune_type", "lora")),
        base_quant=_describe(quantized_specs(model).values()),
        dtype=opts.dtype or float_dtype(model),
        provenance=provenance,
        start=start,
        grids=base_grids(model),
    )
    load_adapter_into(model, model_dir, adapter)
    if opts.format == "peft":
        return job.peft(adapter_config)
    return job.gguf() if opts.format == "gguf" else job.mlx()


@dataclass
class _Job:
    """One fuse, from the loaded base + adapter to the written folder."""

    model: Any
    config: dict[str, Any]
    model_dir: Path
    out: Path
    opts: FuseOptions
    kind: str
    base_quant: str
    dtype: str
    provenance: dict[str, Any]
    start: float
    grids: dict[str, Grid]
    notes: list[str] = field(default_factory=list)

    def loss(self) -> SplitLoss | None:
        from ftx.export.perplexity import model_loss

        if self.opts.data is None:
            return None
        return model_loss(self.model, self.opts.data, self.opts.split, self.opts.max_length)

    def finish(self, report: FuseReport, stage: Path) -> FuseReport:
        """Adds the warnings and the time, and writes the provenance file into ``stage``."""
        from ftx.export.quantization import warnings_for

        warnings = warnings_for(report.layer_errors, report.perplexity_change)
        report = replace(
            report, warnings=[*warnings, *self.notes], seconds=time.perf_counter() - self.start
        )
        self.provenance["report"] = report.to_dict()
        (stage / PROVENANCE).write_text(
            json.dumps(self.provenance, indent=2, default=str) + "\n", encoding="utf-8"
        )
        return report

    def merge(self, dequantize: bool) -> list[FusedLayer]:
        """Merges the adapter layers; the float fused model, in the output dtype."""
        import mlx.core as mx
        from mlx_lm.utils import dequantize_model

        from ftx.export.merge import fuse_adapters
        from ftx.tuner.model import cast_floats

        fused = fuse_adapters(self.model)
        if dequantize:
            self.model = dequantize_model(self.model)
        cast_floats(self.model, self.dtype)
        mx.eval(self.model.parameters())
        return fused

    def group_size(self, bits: int) -> int:
        """--group-size, else the base's own group size at these bits, else the default."""
        if self.opts.group_size is not None:
            return self.opts.group_size
        same_bits = [g.spec.group_size for g in self.grids.values() if g.spec.bits == bits]
        return Counter(same_bits).most_common(1)[0][0] if same_bits else DEFAULT_GROUP_SIZE

    def peft(self, adapter_config: dict[str, Any]) -> FuseReport:
        from ftx.export.peft_adapter import PEFT_CONFIG, PEFT_WEIGHTS, write_peft
        from ftx.staged_folder import staged_folder

        base_name = str(self.config.get("_name_or_path") or self.model_dir.resolve())
        if self.base_quant != "float":
            self.notes.append(
                f"the adapter was trained on a quantized base ({self.base_quant}); applied to "
                f"the float {base_name} it computes a slightly different model"
            )
        with staged_folder(self.out, self.opts.force) as stage:
            n, dtype = write_peft(stage, self.model, adapter_config, base_name)
            files = [PEFT_WEIGHTS, PEFT_CONFIG, PROVENANCE]
            report = FuseReport(
                self.out, "peft", self.kind, n, self.base_quant, "float", dtype, files
            )
            return self.finish(report, stage)

    def gguf(self) -> FuseReport:
        from mlx.utils import tree_flatten

        from ftx.gguf.write import FLOAT_OF, write_gguf
        from ftx.staged_folder import staged_folder

        fused = self.merge(dequantize=True)
        float_loss = self.loss()
        gtype = self.opts.gguf_type()
        name = f"model-{gtype}.gguf"
        with staged_folder(self.out, self.opts.force) as stage:
            result = write_gguf(
                stage / name,
                dict(tree_flatten(self.model.parameters())),
                self.config,
                self.model_dir,
                gtype,
                self.model_dir.name,
                {f.name: f.delta_norm for f in fused},
            )
            if result.pre_tokenizer == "default":
                self.notes.append(
                    "tokenizer.ggml.pre = default: llama.cpp does not know this tokenizer's "
                    "pre-tokenizer and will split text with its generic regex; check its output"
                )
            quantized_loss = None
            if result.quantized_weights and self.opts.data is not None:
                self.model.load_weights(list(result.quantized_weights.items()), strict=False)
                quantized_loss = self.loss()
            report = FuseReport(
                self.out,
                "gguf",
                self.kind,
                len(fused),
                self.base_quant,
                gtype.upper(),
                FLOAT_OF[gtype],
                [name, PROVENANCE],
                result.errors,
                float_loss,
                quantized_loss,
            )
            return self.finish(report, stage)

    def mlx(self) -> FuseReport:
        from mlx_lm.utils import save_config, save_model

        from ftx.export.merge import QuantSpec, quantized_specs, set_quantization_entry
        from ftx.export.quantization import plan_all, quantize_layers
        from ftx.staged_folder import staged_folder

        opts = self.opts
        fused = self.merge(dequantize=True)
        float_loss = self.loss()
        plan: dict[str, QuantSpec] = {}
        if opts.quantize is not None:
            plan = plan_all(self.model, QuantSpec(self.group_size(opts.quantize), opts.quantize))
        elif self.grids and not opts.dequantize:
            self.notes.append(
                f"the base is quantized ({self.base_quant}); the fused model is written in "
                f"{self.dtype}, without loss (--quantize re-quantizes it and reports the error)"
            )
        layer_errors = quantize_layers(self.model, plan, fused, self.grids)
        quantized_loss = self.loss() if plan else None
        set_quantization_entry(self.config, self.model)
        with staged_folder(self.out, self.opts.force) as stage:
            save_model(stage, self.model)
            save_config(self.config, stage / "config.json")
            _copy_model_files(self.model_dir, stage)
            files = [*sorted(f.name for f in stage.iterdir()), PROVENANCE]
            report = FuseReport(
                self.out,
                "mlx",
                self.kind,
                len(fused),
                self.base_quant,
                _describe(quantized_specs(self.model).values()),
                self.dtype,
                files,
                layer_errors,
                float_loss,
                quantized_loss,
            )
            return self.finish(report, stage)

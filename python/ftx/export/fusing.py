"""``ftx fuse``'s work: the base and the adapter loaded, merged, and written as the chosen format.

The face (options, checks, report) is ``ftx.export``; this module runs after it has checked
everything that needs no MLX.
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
from typing import Any

from ftx.runtime.mlx import mx

from mlx.utils import tree_flatten
from mlx_lm.utils import dequantize_model, save_config, save_model

from ftx import __version__
from ftx.export import (
    DEFAULT_GROUP_SIZE,
    PROVENANCE,
    REPLACED,
    FuseOptions,
    FuseReport,
)
from ftx.export.merge import (
    FusedLayer,
    Grid,
    QuantSpec,
    base_grids,
    fuse_adapters,
    load_adapter_into,
    load_base,
    quantized_specs,
    read_adapter_config,
    set_quantization_entry,
)
from ftx.export.peft_adapter import PEFT_CONFIG, PEFT_WEIGHTS, write_peft
from ftx.export.perplexity import SplitLoss, model_loss
from ftx.export.quantization import plan_all, quantize_layers, warnings_for
from ftx.files import sha256_file
from ftx.gguf.write import FLOAT_OF, write_gguf
from ftx.run_folder import RUN_MANIFEST
from ftx.staged_folder import staged_folder
from ftx.training.model import cast_floats, float_dtype


def fuse(model: Path, adapter: Path, out: Path, opts: FuseOptions, start: float) -> FuseReport:
    """``ftx.export.fuse`` after its checks: loads, merges, writes ``out``."""
    adapter_config = read_adapter_config(adapter)
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


def _weights_sha(folder: Path) -> dict[str, str]:
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


def _fuse(
    model_dir: Path,
    adapter: Path,
    out: Path,
    opts: FuseOptions,
    adapter_config: dict[str, Any],
    provenance: dict[str, Any],
    start: float,
) -> FuseReport:
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
        if self.opts.data is None:
            return None
        return model_loss(self.model, self.opts.data, self.opts.split, self.opts.max_length)

    def finish(self, report: FuseReport, stage: Path) -> FuseReport:
        """Adds the warnings and the time, and writes the provenance file into ``stage``."""
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

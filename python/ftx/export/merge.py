"""Merging an mlx-lm adapter into its base, and keeping ``config.json``'s quantization entry
true to the weights that are actually saved.

The adapter layers are mlx-lm's own (``load_adapters``), and each layer's ``fuse`` does the
merge: ``W + scale * B^T A^T`` for LoRA, the same renormalised to the magnitude ``m`` per output
row for DoRA. Layers are always fused to float first (``fuse(dequantize=True)``); whether and
how the result is quantized again is decided afterwards, and measured (``quantization.py``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx, nn

from mlx.utils import tree_unflatten
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import load_model

from ftx.errors import ConfigError, FtxFileNotFoundError

ADAPTERS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class QuantSpec:
    """How one layer's weight is quantized (mlx's affine/fp modes)."""

    group_size: int
    bits: int
    mode: str = "affine"

    def entry(self) -> dict[str, Any]:
        return {"group_size": self.group_size, "bits": self.bits, "mode": self.mode}


@dataclass(frozen=True)
class FusedLayer:
    """One merged layer: how its base weight was stored, and the norm of what the adapter
    changed (the yardstick a re-quantization error is compared with)."""

    name: str
    base_quant: QuantSpec | None
    delta_norm: float


@dataclass(frozen=True)
class Grid:
    """The quantization levels of one base layer: its setting, scales and biases."""

    spec: QuantSpec
    scales: mx.array
    biases: mx.array


def read_adapter_config(adapter: Path) -> dict[str, Any]:
    path = adapter / ADAPTER_CONFIG
    if not (adapter / ADAPTERS).is_file() or not path.is_file():
        raise FtxFileNotFoundError(
            f"adapter = {adapter}: needs {ADAPTERS} and {ADAPTER_CONFIG} (an `ftx train` run "
            "folder or an mlx-lm adapter folder)"
        )
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    kind = config.get("fine_tune_type", "lora")
    if kind not in ("lora", "dora", "full"):
        raise ConfigError(f"{path}: fine_tune_type {kind!r} is not lora, dora or full")
    return config


def quant_spec(module: nn.Module) -> QuantSpec | None:
    if not hasattr(module, "bits"):
        return None
    return QuantSpec(int(module.group_size), int(module.bits), str(module.mode))


def load_base(model: Path) -> tuple[nn.Module, dict[str, Any]]:
    if not (model / "config.json").is_file():
        raise FtxFileNotFoundError(f"model = {model}: no config.json; not a model folder")
    loaded, config = load_model(model)
    return loaded, config


def load_adapter_into(model: nn.Module, model_dir: Path, adapter: Path) -> None:
    """Puts mlx-lm's adapter layers in place and loads the trained weights."""
    try:
        load_adapters(model, str(adapter))
    except ValueError as e:
        raise ConfigError(f"adapter = {adapter} does not fit model = {model_dir}: {e}") from e
    mx.eval(model.parameters())


def adapter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "fuse")]


def base_layer(layer: nn.Module) -> nn.Module:
    inner: nn.Module = layer.linear if "linear" in layer else layer.embedding
    return inner


def float_weight(module: nn.Module) -> mx.array:
    if hasattr(module, "bits"):
        w: mx.array = mx.dequantize(
            module.weight,
            module.scales,
            module.get("biases"),
            group_size=module.group_size,
            bits=module.bits,
            mode=module.mode,
        )
        return w
    weight: mx.array = module.weight
    return weight


def fuse_adapters(model: nn.Module) -> list[FusedLayer]:
    """Replaces every adapter layer by a float layer holding the merged weight."""
    fused: list[tuple[str, nn.Module]] = []
    report: list[FusedLayer] = []
    for name, layer in adapter_layers(model):
        base = base_layer(layer)
        merged = layer.fuse(dequantize=True)
        delta = merged.weight - float_weight(base).astype(merged.weight.dtype)
        norm = float(mx.linalg.norm(delta.astype(mx.float32)).item())  # type: ignore[arg-type]
        fused.append((name, merged))
        report.append(FusedLayer(name, quant_spec(base), norm))
    if fused:
        model.update_modules(tree_unflatten(fused))
    mx.eval(model.parameters())
    return report


def base_grids(model: nn.Module) -> dict[str, Grid]:
    """The levels of every affine-quantized layer, by name (taken before adapters wrap them,
    so the names are those of the fused model)."""
    return {
        n: Grid(s, m.scales, m.biases)
        for n, m in model.named_modules()
        if (s := quant_spec(m)) is not None and s.mode == "affine" and "biases" in m
    }


def quantized_specs(model: nn.Module) -> dict[str, QuantSpec]:
    return {n: s for n, m in model.named_modules() if (s := quant_spec(m)) is not None}


def set_quantization_entry(config: dict[str, Any], model: nn.Module) -> None:
    """Rewrites ``quantization`` / ``quantization_config`` from the layers themselves: absent for
    a float model; otherwise the most common setting, with per-layer entries for the others
    (the form mlx-lm's loader reads). Whatever the source config said is never carried over."""
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    specs = quantized_specs(model)
    if not specs:
        return
    common = Counter(specs.values()).most_common(1)[0][0]
    entry: dict[str, Any] = common.entry()
    entry.update({n: s.entry() for n, s in specs.items() if s != common})
    config["quantization"] = entry
    config["quantization_config"] = dict(entry)

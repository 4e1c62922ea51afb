"""The model side of training: load an mlx-lm architecture from a local folder, choose how the
base computes, apply LoRA / DoRA / full fine-tuning, and save adapters in mlx-lm's format.

Architectures and LoRA layers are mlx-lm's own (``mlx_lm.utils.load_model``,
``linear_to_lora_layers``), so whatever mlx-lm can load, ftx can train.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx, nn

from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import dequantize_model, load_model

from ftx.config import TrainConfig
from ftx.errors import ConfigError
from ftx.runtime.device import auto_compute_dtype, auto_dequantize, kind_of

QUANT_GROUP = 64
ADAPTERS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_LEAVES = ("lora_a", "lora_b", "m")
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


@dataclass(frozen=True)
class Base:
    """What was loaded and how its frozen weights compute during training."""

    model_type: str
    quantized_bits: tuple[int, ...]  # every width among the layers, e.g. (4, 8); () for float
    dequantized: bool
    compute_dtype: str

    def describe(self) -> str:
        if not self.quantized_bits:
            return f"{self.model_type}, float, computing in {self.compute_dtype}"
        how = (
            f"dequantized to {self.compute_dtype} (CPU quantized matmul is far slower than GEMM)"
            if self.dequantized
            else "kept quantized (QLoRA)"
        )
        bits = "/".join(str(b) for b in self.quantized_bits)
        return f"{self.model_type}, {bits}-bit, {how}"


def flatten(tree: Any) -> list[tuple[str, Any]]:
    """``tree_flatten`` with the list type it returns when no destination is given."""
    flat: list[tuple[str, Any]] = tree_flatten(tree)  # type: ignore[assignment]
    return flat


def flatten_modules(model: nn.Module) -> list[tuple[str, Any]]:
    flat: list[tuple[str, Any]] = tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module)  # type: ignore[assignment]
    return flat


def scalar(a: mx.array) -> float:
    return float(a.item())  # type: ignore[arg-type]


def on_gpu() -> bool:
    return bool(mx.default_device() == mx.gpu)


def _quantized_bits(model: nn.Module) -> tuple[int, ...]:
    return tuple(sorted({int(m.bits) for _, m in model.named_modules() if hasattr(m, "bits")}))


def cast_floats(model: nn.Module, dtype: str) -> None:
    """Casts every float weight of the non-quantized layers to ``dtype`` (lazily: nothing is
    read until evaluated); quantized weights and their scales keep their types."""
    quantized = {n for n, m in model.named_modules() if hasattr(m, "bits")}
    target = DTYPES[dtype]
    weights = [
        (k, v.astype(target))
        for k, v in flatten(model.parameters())
        if mx.issubdtype(v.dtype, mx.floating) and k.rsplit(".", 1)[0] not in quantized
    ]
    model.load_weights(weights, strict=False)


def float_dtype(model: nn.Module) -> str:
    """The most common float dtype of the weights, by size (quantization scales included)."""
    counts: Counter[str] = Counter()
    for _, v in flatten(model.parameters()):
        if mx.issubdtype(v.dtype, mx.floating):
            counts[str(v.dtype).removeprefix("mlx.core.")] += v.size
    return counts.most_common(1)[0][0] if counts else "float32"


def load_base(config: TrainConfig, lazy: bool = False) -> tuple[nn.Module, Base]:
    """The base model, quantized (``quantize``), dequantized or cast as the config asks.

    On CPU the auto choices are float32 for everything: MLX's CPU GEMM on float32 runs through
    BLAS, while bfloat16 and quantized matmuls take much slower paths. ``lazy`` builds the
    model without reading a weight (shapes and dtypes only, for a dry run).
    """
    model, hf = load_model(Path(config.model), lazy=True)
    if config.quantize is not None:
        if _quantized_bits(model):
            raise ConfigError(f"quantize = {config.quantize}: {config.model} is already quantized")
        nn.quantize(
            model,
            group_size=QUANT_GROUP,
            bits=config.quantize,
            class_predicate=lambda _, m: (
                hasattr(m, "to_quantized") and m.weight.shape[-1] % QUANT_GROUP == 0
            ),
        )
    bits = _quantized_bits(model)
    kind = kind_of(mx.default_device() == mx.cpu)
    dequantize = bool(bits) and (
        config.dequantize_base == "always"
        or (config.dequantize_base == "auto" and auto_dequantize(kind))
    )
    if bits and config.method == "full" and not dequantize:
        raise ConfigError(
            f"method = 'full': the weights of {config.model} are quantized; "
            "set dequantize_base: always or use lora/dora"
        )
    if dequantize:
        model = dequantize_model(model)
    dtype = auto_compute_dtype(kind) if config.compute_dtype == "auto" else config.compute_dtype
    if dtype is not None:
        cast_floats(model, dtype)
    if not lazy:
        mx.eval(model.parameters())
    return model, Base(str(hf.get("model_type")), bits, dequantize, float_dtype(model))


def lora_parameters(config: TrainConfig, keys: list[str]) -> dict[str, Any]:
    return {
        "rank": config.rank,
        "scale": config.lora_scale,
        "dropout": config.dropout,
        "keys": keys,
    }


def layer_count(model: nn.Module) -> int:
    return len(model.layers)


def default_targets(model: nn.Module) -> list[str]:
    """Names (relative to a block) of every linear layer in the blocks: mlx-lm's default."""
    names = {
        name
        for block in model.layers
        for name, m in block.named_modules()
        if isinstance(m, nn.Linear | nn.QuantizedLinear)
    }
    return sorted(names)


def adapt(model: nn.Module, config: TrainConfig) -> dict[str, Any]:
    """Freezes the base and makes trainable what the method says; returns the
    ``adapter_config.json`` content that lets mlx-lm rebuild the same layers."""
    num_layers = config.num_layers or layer_count(model)
    model.freeze()
    meta: dict[str, Any] = {"fine_tune_type": config.method, "num_layers": num_layers}
    if config.method == "full":
        for block in model.layers[-num_layers:]:
            block.unfreeze()
        return meta
    keys = config.target_modules or default_targets(model)
    # LoRA's A matrices start random: seeded so a run is repeatable.
    mx.random.seed(config.seed)
    params = lora_parameters(config, keys)
    linear_to_lora_layers(model, num_layers, params, use_dora=config.method == "dora")
    meta["lora_parameters"] = params
    return meta


def trainable_parameters(model: nn.Module) -> dict[str, mx.array]:
    return dict(flatten(model.trainable_parameters()))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable). A quantized weight counts its unpacked size."""
    total = 0
    for _, m in flatten_modules(model):
        for name, v in flatten(m.parameters()):
            if hasattr(m, "bits") and name == "weight":
                total += v.size * 32 // int(m.bits)
            elif not (hasattr(m, "bits") and name in {"scales", "biases"}):
                total += v.size
    trainable = sum(v.size for v in trainable_parameters(model).values())
    return total, trainable


def save_adapters(
    model: nn.Module, folder: Path, meta: dict[str, Any], name: str = ADAPTERS
) -> Path:
    """``adapters.safetensors`` (the trainable weights) + ``adapter_config.json``, mlx-lm's
    layout: ``mlx_lm.load(base, adapter_path=folder)`` restores the trained model."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    mx.save_safetensors(str(path), trainable_parameters(model))
    (folder / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path

"""Loss and perplexity of a model on one split of a prepared artifact, over trained tokens only
(token ``j + 1`` is a target when its mask bit is set, as in training).

On CPU the model is evaluated through a float32 twin (``float32_twin``): a quantized layer
computes ``x @ dequantize(W)``, so the twin computes the same model, but through BLAS GEMM
rather than MLX's CPU quantized matmul, which is tens of times slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx, nn

import numpy as np

from ftx.data import load_dataset
from ftx.errors import DataError
from ftx.export.merge import float_weight
from ftx.training.model import flatten, on_gpu


@dataclass(frozen=True)
class SplitLoss:
    loss: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def split_loss(model: nn.Module, data: Path, split: str, max_length: int) -> SplitLoss:
    """Mean cross-entropy over the trained tokens of ``split``; records longer than
    ``max_length`` are cut there. One record per forward: exact, no padding or packing."""
    # mlx-lm models carry their config as ``args``; its vocab_size is the embedding's rows.
    rows = getattr(getattr(model, "args", None), "vocab_size", None)
    ds = load_dataset(data, split, rows if isinstance(rows, int) else None)
    total = 0.0
    count = 0
    for tokens, mask in ds:
        tokens, mask = tokens[: max_length + 1], mask[: max_length + 1]
        weights = np.asarray(mask[1:], dtype=np.float32)
        if len(tokens) < 2 or not weights.any():
            continue
        inputs = mx.array(np.asarray(tokens[:-1], dtype=np.int32))[None]
        targets = mx.array(np.asarray(tokens[1:], dtype=np.int32))
        logits = model(inputs)[0].astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, targets) * mx.array(weights)
        total += float(ce.sum().item())  # type: ignore[arg-type]
        count += int(weights.sum())
    if count == 0:
        raise DataError(f"{data}: the {split} split has no trained tokens to evaluate")
    return SplitLoss(total / count, count)


def float32_twin(model: nn.Module) -> nn.Module:
    """A new model of the same architecture with every weight in float32 and the quantized
    layers dequantized."""
    modules = dict(model.named_modules())
    weights = []
    for name, v in flatten(model.parameters()):
        owner, leaf = name.rsplit(".", 1)
        layer = modules.get(owner)
        if layer is not None and hasattr(layer, "bits"):
            if leaf in ("scales", "biases"):
                continue
            if leaf == "weight":
                v = float_weight(layer)
        weights.append((name, v.astype(mx.float32) if mx.issubdtype(v.dtype, mx.floating) else v))
    # mlx-lm models keep their ModelArgs as ``args``.
    architecture: Any = type(model)
    twin: nn.Module = architecture(model.args)
    twin.load_weights(weights)
    twin.eval()
    return twin


def model_loss(model: nn.Module, data: Path, split: str, max_length: int) -> SplitLoss:
    """``split_loss`` of ``model`` as it computes, through its float32 twin on CPU."""
    return split_loss(model if on_gpu() else float32_twin(model), data, split, max_length)

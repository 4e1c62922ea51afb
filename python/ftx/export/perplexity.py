"""Loss and perplexity of a model on one split of a prepared artifact, over trained tokens only
(token ``j + 1`` is a target when its mask bit is set, as in training)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ftx.data import load_dataset
from ftx.errors import DataError


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
    ds = load_dataset(data, split)
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

"""Optimizers and their learning rates, including LoRA+'s faster B matrices."""

from __future__ import annotations

from typing import Any

from ftx.runtime.mlx import optim

from ftx.config import TrainConfig


def _one(config: TrainConfig) -> optim.Optimizer:
    # The learning rate is a placeholder: the trainer writes the scheduled value every step.
    lr, wd = config.learning_rate, config.weight_decay
    if config.optimizer == "adamw":
        return optim.AdamW(learning_rate=lr, weight_decay=wd)
    if config.optimizer == "adam":
        return optim.Adam(learning_rate=lr)
    if config.optimizer == "sgd":
        return optim.SGD(learning_rate=lr, momentum=config.momentum, weight_decay=wd)
    # Adafactor's own relative step size and parameter scaling are off, so that learning_rate
    # and the schedule mean what they mean for the other optimizers.
    return optim.Adafactor(
        learning_rate=lr, relative_step=False, scale_parameter=False, weight_decay=wd
    )


def is_lora_b(path: str, _: Any = None) -> bool:
    return path.rsplit(".", 1)[-1] == "lora_b"


def build_optimizer(config: TrainConfig) -> optim.Optimizer:
    """One optimizer, or with LoRA+ two of the same kind: the first for every ``lora_b``."""
    if config.lora_plus_ratio is None:
        return _one(config)
    return optim.MultiOptimizer([_one(config), _one(config)], [is_lora_b])


def set_learning_rate(optimizer: optim.Optimizer, lr: float, config: TrainConfig) -> None:
    if isinstance(optimizer, optim.MultiOptimizer):
        b, rest = optimizer.optimizers
        b.learning_rate = lr * (config.lora_plus_ratio or 1.0)
        rest.learning_rate = lr
    else:
        optimizer.learning_rate = lr

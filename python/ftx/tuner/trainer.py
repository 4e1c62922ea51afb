"""The training loop: compiled micro-steps, gradient accumulation, clipping, schedules,
validation, checkpoints and metrics.

The loss of an optimizer step is the mean over every trained token of all its micro-batches
(not a mean of per-micro-batch means): each micro-batch returns its summed loss divided by the
step's total trained tokens, known before the step runs, and gradients are summed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from ftx.config import TrainConfig
from ftx.errors import DataError, FtxError
from ftx.tuner.batching import Batch, Plan, Rows, make_batch
from ftx.tuner.forward import Forward
from ftx.tuner.model import save_adapters, scalar
from ftx.tuner.optim import build_optimizer, set_learning_rate
from ftx.tuner.schedules import build_schedule

Callback = Callable[[dict[str, Any]], None]
Grads = dict[str, Any]


class DivergedError(FtxError):
    """The loss became NaN or infinite."""


@dataclass
class Totals:
    """Running counts since the start of training."""

    steps: int = 0
    trained_tokens: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0

    @property
    def packing_efficiency(self) -> float:
        return self.real_tokens / max(1, self.computed_tokens)


@dataclass(frozen=True)
class FitResult:
    totals: Totals
    epochs: float
    train_loss: float | None
    val_loss: float | None
    grad_norm: float | None


# inputs, segments (None: plain causal attention), positions, targets, weights
Arrays = tuple[mx.array, mx.array | None, mx.array, mx.array, mx.array]


def _arrays(b: Batch) -> Arrays:
    segments = None if b.segments is None else mx.array(b.segments)
    return (
        mx.array(b.inputs),
        segments,
        mx.array(b.positions),
        mx.array(b.targets),
        mx.array(b.weights),
    )


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        forward: Forward,
        config: TrainConfig,
        plan: Plan,
        valid: Plan | None,
        run_dir: Path,
        adapter_meta: dict[str, Any],
        callbacks: list[Callback],
    ) -> None:
        self.model, self.forward, self.config = model, forward, config
        self.plan, self.valid = plan, valid
        self.run_dir, self.adapter_meta, self.callbacks = run_dir, adapter_meta, callbacks
        if plan.num_batches == 0:
            raise DataError(f"{plan.ds.root}: no train record has a trained token")
        self.steps_per_epoch = math.ceil(plan.num_batches / config.grad_accumulation)
        self.total_steps = config.iters or (config.epochs or 1) * self.steps_per_epoch
        self.schedule = build_schedule(
            config.schedule,
            config.learning_rate,
            self.total_steps,
            config.warmup_steps,
            config.min_lr_ratio,
            config.cycle_steps,
        )
        self.optimizer = build_optimizer(config)
        self.optimizer.init(model.trainable_parameters())
        self._compile()

    def _compile(self) -> None:
        model, forward, optimizer = self.model, self.forward, self.optimizer
        max_norm = self.config.max_grad_norm
        loss_and_grad = nn.value_and_grad(model, forward.loss)
        state = [model.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def micro(arrays: Arrays, norm: mx.array, acc: Grads | None) -> Any:
            loss, grads = loss_and_grad(*arrays, norm)
            if acc is not None:
                grads = tree_map(mx.add, grads, acc)
            return loss, grads

        @partial(mx.compile, inputs=state, outputs=state)
        def update(grads: Grads) -> Any:
            clipped, norm = optim.clip_grad_norm(grads, max_norm or math.inf)
            optimizer.update(model, clipped)
            return norm

        @partial(mx.compile, inputs=[model.state])
        def val_sum(arrays: Arrays) -> mx.array:
            return forward.loss(*arrays, mx.array(1.0))

        self._micro, self._update, self._val_sum = micro, update, val_sum
        self._state = state

    def _steps(self) -> Iterator[list[Rows]]:
        """The micro-batches of each optimizer step, epoch after epoch until the last step."""
        accum, step, epoch = self.config.grad_accumulation, 0, 0
        while True:
            batches = self.plan.batches(epoch)
            for k in range(0, len(batches), accum):
                if step == self.total_steps:
                    return
                yield batches[k : k + accum]
                step += 1
            epoch += 1

    def evaluate(self, plan: Plan, limit: int | None = None) -> float:
        """Mean loss over the trained tokens of (the first ``limit`` micro-batches of) a split."""
        self.model.eval()
        total, count = mx.array(0.0), 0
        for i, batch in enumerate(plan):
            if limit is not None and i >= limit:
                break
            total = total + self._val_sum(_arrays(batch))
            count += batch.trained
            mx.eval(total)
        self.model.train()
        return scalar(total) / max(1, count)

    def _report(self, record: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback(record)

    def fit(self) -> FitResult:
        config, totals = self.config, Totals()
        self.model.train()
        window = Totals()
        window_loss = 0.0
        train_loss = val_loss = grad_norm = None
        start = time.perf_counter()
        for micro_batches in self._steps():
            tic = time.perf_counter()
            batches = [
                make_batch(self.plan.ds, rows, self.plan.budget, self.plan.packing)
                for rows in micro_batches
            ]
            norm = mx.array(float(max(1, sum(b.trained for b in batches))))
            loss, acc = mx.array(0.0), cast(Grads | None, None)
            for b in batches:
                part, acc = self._micro(_arrays(b), norm, acc)
                loss = loss + part
            lr = self.schedule(totals.steps)
            set_learning_rate(self.optimizer, lr, config)
            gnorm = self._update(cast(Grads, acc))
            mx.eval(self._state, loss, gnorm)
            step_loss = scalar(loss)
            if not math.isfinite(step_loss):
                raise DivergedError(
                    f"training diverged at step {totals.steps + 1}: loss {step_loss}"
                )
            for t in (totals, window):
                t.steps += 1
                t.trained_tokens += sum(b.trained for b in batches)
                t.real_tokens += sum(b.real_tokens for b in batches)
                t.computed_tokens += sum(b.computed_tokens for b in batches)
                t.seconds += time.perf_counter() - tic
            window_loss += step_loss * sum(b.trained for b in batches)
            grad_norm = scalar(gnorm)
            step = totals.steps
            record: dict[str, Any] = {
                "step": step,
                "epoch": round(step / self.steps_per_epoch, 4),
                "learning_rate": lr,
                "grad_norm": grad_norm,
            }
            last = step == self.total_steps
            if step % config.report_every == 0 or last:
                train_loss = window_loss / max(1, window.trained_tokens)
                record |= {
                    "train_loss": train_loss,
                    "trained_tokens_per_s": window.trained_tokens / max(window.seconds, 1e-9),
                    "processed_tokens_per_s": window.real_tokens / max(window.seconds, 1e-9),
                }
                window, window_loss = Totals(), 0.0
            if self.valid is not None and (
                last or (config.eval_every is not None and step % config.eval_every == 0)
            ):
                val_loss = self.evaluate(self.valid, config.val_batches)
                record["val_loss"] = val_loss
            if config.save_every is not None and step % config.save_every == 0:
                folder = self.run_dir / "checkpoints" / f"step-{step:07d}"
                save_adapters(self.model, folder, self.adapter_meta)
            record["peak_memory"] = mx.get_peak_memory()
            record["elapsed"] = round(time.perf_counter() - start, 3)
            self._report(record)
        return FitResult(
            totals=totals,
            epochs=totals.steps / self.steps_per_epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            grad_norm=grad_norm,
        )

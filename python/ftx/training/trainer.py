"""The training loop: compiled micro-steps, gradient accumulation, clipping, schedules,
validation, early stopping, checkpoints and metrics.

The loss of an optimizer step is the mean over every trained token of all its micro-batches
(not a mean of per-micro-batch means): each micro-batch returns its summed loss divided by the
step's total trained tokens, known before the step runs, and gradients are summed.

Everything a step depends on is a function of the step number or is in the checkpoint: the
micro-batches come from the seeded plan at (epoch, position) = divmod(step, steps per epoch),
the MLX random key (dropout) is re-seeded from (seed, step) before every step, the learning rate
is the schedule at that step, and the weights and optimizer state are restored from the files.
So a resumed run computes what the uninterrupted run computes, bit for bit.

On CPU a micro-batch's rows are cut into shards computed at once on parallel MLX streams
(``ftx.runtime.streams``); each stream accumulates its own gradients, summed once per step.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial, reduce
from pathlib import Path
from types import FrameType
from typing import Any, cast

from ftx.runtime.mlx import mx, nn

import numpy as np
from mlx.utils import tree_map, tree_unflatten

from ftx.config import TrainConfig, resolved
from ftx.errors import DataError, FtxError, TrainingInterrupted
from ftx.training import checkpoint
from ftx.training.batching import Batch, Plan, Rows, make_batch
from ftx.training.checkpoint import Checkpoint
from ftx.training.fit import raise_past_plan
from ftx.training.forward import Forward
from ftx.training.metrics import is_line
from ftx.training.model import flatten, scalar, trainable_parameters
from ftx.training.optim import build_optimizer, set_learning_rate
from ftx.training.schedules import build_schedule

Callback = Callable[[dict[str, Any]], None]
Grads = dict[str, Any]
# Step seeds: seed * this + step, distinct for every (seed, step) of any realistic run.
STEP_SEED_STRIDE = 1 << 32
# Per-step token counts, in the order Totals.add takes them.
COUNTS = ("trained", "real_tokens", "computed_tokens")
# mlx's clip_grad_norm guards its division the same way.
CLIP_EPS = 1e-6


class DivergedError(FtxError):
    """Too many steps in a row had a non-finite loss or gradient."""


@dataclass
class Totals:
    """Running counts (since the start of training, or of a report window)."""

    steps: int = 0
    trained_tokens: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0

    def add(self, counts: tuple[int, int, int], seconds: float) -> None:
        """One step of ``counts`` = (trained, real, computed) tokens."""
        self.steps += 1
        self.trained_tokens += counts[0]
        self.real_tokens += counts[1]
        self.computed_tokens += counts[2]
        self.seconds += seconds


@dataclass
class RunState:
    """What the loop carries from step to step besides arrays; a checkpoint stores it as JSON."""

    step: int = 0
    elapsed: float = 0.0
    totals: Totals = field(default_factory=Totals)
    window: Totals = field(default_factory=Totals)
    window_loss: float = 0.0
    train_loss: float | None = None
    val_loss: float | None = None
    grad_norm: float | None = None
    best_val: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    bad_steps: int = 0
    skipped_steps: int = 0
    stop_reason: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        return cls(**{**d, "totals": Totals(**d["totals"]), "window": Totals(**d["window"])})


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
        provenance: str | None = None,
        resume: Checkpoint | None = None,
        group: mx.distributed.Group | None = None,
        streams: int = 1,
        cache_limit: int | None = None,
    ) -> None:
        self.model, self.forward, self.config = model, forward, config
        self.plan, self.valid = plan, valid
        self.run_dir, self.adapter_meta, self.callbacks = run_dir, adapter_meta, callbacks
        self.provenance = provenance
        # Data parallel: each rank computes its share of the rows of every micro-batch.
        self.group = group
        self.rank = group.rank() if group is not None else 0
        self.ranks = group.size() if group is not None else 1
        self.streams = [mx.new_stream(mx.cpu) for _ in range(streams)] if streams > 1 else []
        # Rows of other widths leave freed buffers of other sizes in MLX's cache: cleared when
        # they would take memory the plan did not leave (None: no limit known).
        self.cache_limit = cache_limit
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
        self.state = RunState()
        if resume is not None:
            self._restore(resume)
        self._epoch_batches: tuple[int, list[Rows]] | None = None
        self._interrupted = False
        self._compile()

    def _restore(self, ckpt: Checkpoint) -> None:
        s = ckpt.state
        self.model.load_weights(ckpt.weights(), strict=False)
        self.optimizer.state = ckpt.optimizer_state()
        self.state = RunState.from_dict(s["run"])
        np_state = s["random"]["numpy"]
        np.random.set_state((np_state[0], np.array(np_state[1], np.uint32), *np_state[2:]))
        py = s["random"]["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        mx.eval(self.model.parameters(), self.optimizer.state)

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

        @mx.compile
        def global_norm(grads: Grads) -> mx.array:
            return mx.sqrt(sum((g.square().sum() for _, g in flatten(grads)), mx.array(0.0)))

        @partial(mx.compile, inputs=state, outputs=state)
        def update(grads: Grads, norm: mx.array) -> None:
            if max_norm is not None:
                scale = mx.minimum(1.0, max_norm / (norm + CLIP_EPS))
                grads = tree_map(lambda g: g * scale, grads)
            optimizer.update(model, grads)

        @partial(mx.compile, inputs=[model.state])
        def val_sum(arrays: Arrays) -> mx.array:
            return forward.loss(*arrays, mx.array(1.0))

        self._micro, self._norm, self._update, self._val_sum = micro, global_norm, update, val_sum
        self._state = state

    def _shards(self, rows: Rows) -> list[tuple[int, Rows]]:
        """This rank's rows of a micro-batch, dealt to the streams: (stream, rows) pairs."""
        mine = rows[self.rank :: self.ranks]
        n = max(1, len(self.streams))
        return [(k, part) for k in range(n) if (part := mine[k::n])]

    def _on(self, stream: int) -> AbstractContextManager[Any]:
        return mx.stream(self.streams[stream]) if self.streams else nullcontext()

    def _micro_batches(self, step: int) -> list[Rows]:
        """Step ``step``'s micro-batches: the data cursor is the step number itself."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            self._epoch_batches = (epoch, self.plan.batches(epoch))
        accum = self.config.grad_accumulation
        return self._epoch_batches[1][k * accum : (k + 1) * accum]

    def evaluate(self, plan: Plan, limit: int | None = None) -> float:
        """Mean loss over the trained tokens of (the first ``limit`` micro-batches of) a split."""
        self.model.eval()
        total, count = mx.array(0.0), 0
        for rows in plan.batches()[:limit]:
            for k, part in self._shards(rows):
                batch = make_batch(plan.ds, part, plan.budget, plan.packing)
                with self._on(k):
                    total = total + self._val_sum(_arrays(batch))
                count += batch.trained
            mx.eval(total)
        self.model.train()
        both = self._all_sum(mx.array([total.item(), float(count)]))
        return scalar(both[0]) / max(1.0, scalar(both[1]))

    def _all_sum(self, x: Any) -> Any:
        """Sum over ranks (an array or a tree of them); itself when there is one rank.

        A tree goes as one flat buffer in one collective. Collectives pair up in the order each
        rank happens to evaluate them, and MLX orders independent ones by the shape of the
        graph behind them: a rank that ran another number of micro-batches summed the
        gradient of one layer with its peer's of another layer of the same shape."""
        if self.ranks == 1:
            return x
        if isinstance(x, mx.array):
            return mx.distributed.all_sum(x, group=self.group)
        leaves = flatten(x)
        flat = mx.concatenate([a.astype(mx.float32).reshape(-1) for _, a in leaves])
        total = mx.distributed.all_sum(flat, group=self.group)
        ends = np.cumsum([a.size for _, a in leaves]).tolist()
        parts = mx.split(total, ends[:-1])
        return tree_unflatten(
            [
                (k, p.reshape(a.shape).astype(a.dtype))
                for (k, a), p in zip(leaves, parts, strict=True)
            ]
        )

    def _report(self, record: dict[str, Any]) -> None:
        if is_line(record):
            self.state.metrics.append(record)
        for callback in self.callbacks:
            callback(record)

    def _event(self, name: str, **info: Any) -> None:
        self._report({"event": name, "step": self.state.step, **info})

    def _step(self, micro_batches: list[Rows]) -> tuple[float, float, bool, tuple[int, int, int]]:
        """One optimizer step: (loss, grad norm, applied, token counts of all ranks)."""
        cfg, plan = self.config, self.plan
        mx.random.seed(cfg.seed * STEP_SEED_STRIDE + self.state.step)
        batches: list[list[tuple[int, Batch]]] = [
            [(k, make_batch(plan.ds, part, plan.budget, plan.packing)) for k, part in shards]
            for rows in micro_batches
            if (shards := self._shards(rows))
        ]
        local = [sum(getattr(b, c) for micro in batches for _, b in micro) for c in COUNTS]
        counts = tuple(int(c) for c in self._all_sum(mx.array(local)).tolist())
        norm = mx.array(float(max(1, counts[0])))
        loss, accs = mx.array(0.0), cast(dict[int, Grads], {})
        for micro in batches:
            for k, b in micro:
                with self._on(k):
                    part, accs[k] = self._micro(_arrays(b), norm, accs.get(k))
                loss = loss + part
            # One micro-batch at a time: evaluated together, the micro-batches of a step would
            # hold their activations at once, and accumulation would save no memory.
            mx.eval(loss, accs)
        if accs:
            acc = reduce(partial(tree_map, mx.add), accs.values())
        else:  # this rank had no rows in this step
            acc = tree_map(mx.zeros_like, self.model.trainable_parameters())
        grads, loss = self._all_sum([acc, loss])
        gnorm = self._norm(grads)
        mx.eval(loss, gnorm, grads)
        step_loss, grad_norm = scalar(loss), scalar(gnorm)
        total = cast(tuple[int, int, int], counts)
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            return step_loss, grad_norm, False, total
        set_learning_rate(self.optimizer, self.schedule(self.state.step), cfg)
        self._update(grads, gnorm)
        mx.eval(self._state)
        return step_loss, grad_norm, True, total

    def _checkpoint(self) -> None:
        if self.rank != 0:  # every rank holds the same weights; one writes them
            return
        s = self.state
        np_state: Any = np.random.get_state()
        py_state = random.getstate()
        epoch, position = divmod(s.step, self.steps_per_epoch)
        body = {
            "step": s.step,
            "cursor": {"epoch": epoch, "position": position},
            "random": {
                "mlx": {"seed": self.config.seed, "stride": STEP_SEED_STRIDE},
                "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                "python": [py_state[0], list(py_state[1]), py_state[2]],
            },
            "data_provenance": self.provenance,
            "config": resolved(self.config),
            "run": asdict(s),
        }
        weights = trainable_parameters(self.model)
        path = checkpoint.save(self.run_dir, weights, self.optimizer.state, body, self.adapter_meta)
        protect = {s.best_step} if s.best_step is not None else set()
        checkpoint.prune(self.run_dir, self.config.keep_checkpoints, protect)
        self._event("checkpoint", path=str(path.relative_to(self.run_dir)))

    def _validate(self) -> bool:
        """Validation loss now; updates early stopping. True when it improved (a new best)."""
        assert self.valid is not None
        cfg, s = self.config, self.state
        s.val_loss = self.evaluate(self.valid, cfg.val_batches)
        if s.best_val is None or s.val_loss < s.best_val - cfg.min_delta:
            s.best_val, s.best_step, s.bad_evals = s.val_loss, s.step, 0
            return True
        s.bad_evals += 1
        if cfg.patience is not None and s.bad_evals >= cfg.patience:
            s.stop_reason = (
                f"early stopping: val loss did not improve by more than {cfg.min_delta} in "
                f"{cfg.patience} validations; best {s.best_val:.4f} at step {s.best_step}"
            )
        return False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        # The first Ctrl-C finishes the step and checkpoints; a second one interrupts at once.
        self._interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def fit(self) -> RunState:
        """Trains from ``self.state.step`` to the end, early stop, or Ctrl-C."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if main else None
        try:
            self._fit()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        return self.state

    def _fit(self) -> None:
        cfg, s = self.config, self.state
        self.model.train()
        started = time.perf_counter() - s.elapsed
        if s.step > 0:
            self._event("resumed")
        saved_at = s.step if s.step > 0 else None
        while s.step < self.total_steps and s.stop_reason is None:
            tic = time.perf_counter()
            lr = self.schedule(s.step)
            step_loss, grad_norm, applied, counts = self._step(self._micro_batches(s.step))
            s.step += 1
            for t in (s.totals, s.window):
                t.add(counts, time.perf_counter() - tic)
            if applied:
                s.bad_steps = 0
                s.window_loss += step_loss * counts[0]
                s.grad_norm = grad_norm
            else:
                s.bad_steps += 1
                s.skipped_steps += 1
                self._event("skipped_step", loss=step_loss, grad_norm=grad_norm)
                if s.bad_steps >= cfg.max_bad_steps:
                    s.stop_reason = (
                        f"diverged: {s.bad_steps} steps in a row had a non-finite loss or "
                        f"gradient (last: loss {step_loss}, grad norm {grad_norm})"
                    )
            record: dict[str, Any] = {
                "step": s.step,
                "epoch": round(s.step / self.steps_per_epoch, 4),
                "learning_rate": lr,
                "grad_norm": grad_norm,
            }
            last = s.step == self.total_steps
            if s.step % cfg.report_every == 0 or last:
                w = s.window
                s.train_loss = s.window_loss / w.trained_tokens if w.trained_tokens else None
                record |= {
                    "train_loss": s.train_loss,
                    "trained_tokens_per_s": w.trained_tokens / max(w.seconds, 1e-9),
                    "processed_tokens_per_s": w.real_tokens / max(w.seconds, 1e-9),
                }
                s.window, s.window_loss = Totals(), 0.0
            improved = False
            if self.valid is not None and (
                last or (cfg.eval_every is not None and s.step % cfg.eval_every == 0)
            ):
                improved = self._validate()
                record["val_loss"] = s.val_loss
            record["peak_memory"] = mx.get_peak_memory()
            if (raised := raise_past_plan(record["peak_memory"])) is not None:
                self._event("over_plan", **raised)
            if self.cache_limit is not None and mx.get_cache_memory() > self.cache_limit:
                mx.clear_cache()
            s.elapsed = time.perf_counter() - started
            record["elapsed"] = round(s.elapsed, 3)
            self._report(record)
            periodic = cfg.save_every is not None and s.step % cfg.save_every == 0
            if periodic or improved or last or self._interrupted or s.stop_reason:
                self._checkpoint()
                saved_at = s.step
            if self._interrupted:
                raise TrainingInterrupted(
                    f"interrupted: checkpoint of step {s.step} saved in {self.run_dir}; "
                    "run the same command again to resume"
                )
        if s.stop_reason is None:
            s.stop_reason = f"completed {s.step} steps"
        if saved_at != s.step:
            self._checkpoint()
        self._event("stopped", reason=s.stop_reason, best_step=s.best_step)
        if s.stop_reason.startswith("diverged"):
            raise DivergedError(f"{s.stop_reason}; the last checkpoint holds finite weights")

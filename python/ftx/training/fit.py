"""The memory plan, made before a weight is read: the estimate of the run as configured, checked
against the memory it may use, and what to change when it does not fit.

The model is built lazily (shapes and dtypes, no weight read), so trying another batch size or
a quantized base costs a rebuild of the graph, not a load. ``fit: check`` (the default) refuses
a run that does not fit and lists the changes that would fit, each with its estimate;
``fit: auto`` takes the first of them, in the order below (the least change to what is
computed first): recomputing attention's weights, then checkpointed blocks (as few as fit under
``grad_checkpoint: auto``, all of them as a change), then fewer rows per micro-batch with as
many more micro-batches per step (the same rows per optimizer step), then a quantized base,
then shorter rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from ftx.runtime.mlx import mx, nn

from ftx.config import TrainConfig
from ftx.errors import ConfigError
from ftx.training.batching import Plan
from ftx.training.memory import (
    MemoryEstimate,
    available_memory,
    estimate_memory,
    trained_blocks,
)
from ftx.training.model import Base, on_gpu

# loss_chunk: auto: the positions whose float32 logits take this many bytes.
LOSS_CHUNK_BYTES = 64 * 2**20
# fit: shorter rows are tried down to this width.
MIN_ROW = 256
# A peak this far past MLX's memory limit (the plan's total, memory_limits) means the run
# needs more than its plan: under the limit MLX computes one operation at a time (SmolLM2 at 2k
# with a limit far below the need: 2x the step time), so the limit is raised to the peak and
# the run says so. Held to a plan that counts enough, peaks pass it by 1-4%.
OVER_PLAN = 1.1

Built = tuple[nn.Module, Base, dict[str, Any], Plan]
Build = Callable[[TrainConfig], Built]
# What the backward recomputes (grad_checkpoint): nothing, attention's weights, N blocks, all.
Recompute = bool | int | Literal["attention"]


def _rank(mode: bool | int | str) -> int:
    """Recompute modes from the least recomputed (True == 1 in Python: bools first)."""
    if isinstance(mode, bool):
        return 3 if mode else 0
    return 1 if mode == "attention" else 2


@dataclass
class Fitted:
    """The run to start: its config (``grad_checkpoint`` decided), model, base, adapter
    metadata and plan, their estimate, and what ``fit: auto`` changed."""

    config: TrainConfig
    model: nn.Module
    base: Base
    adapter_meta: dict[str, Any]
    plan: Plan
    memory: MemoryEstimate
    changes: dict[str, Any] = field(default_factory=dict)


def loss_chunk(config: TrainConfig, vocab: int) -> int | None:
    """Positions per chunk of the loss; None computes it in one piece."""
    if config.loss_chunk == "off":
        return None
    if config.loss_chunk == "auto":
        return max(1, LOSS_CHUNK_BYTES // (vocab * 4))
    return config.loss_chunk


def memory_limit(config: TrainConfig) -> tuple[int | None, str]:
    """The bytes the run may use and where that number comes from."""
    if config.memory_limit is not None:
        return int(config.memory_limit), "memory_limit"
    return available_memory(), "the GPU's working set" if on_gpu() else "the RAM available"


def vocab_size(model_config: dict[str, Any]) -> int:
    return int(model_config.get("text_config", model_config)["vocab_size"])


def settle(
    config: TrainConfig,
    model_config: dict[str, Any],
    build: Build,
    streams: Callable[[TrainConfig], int],
) -> Fitted:
    """The plan of ``config``, or of the first change that fits (``fit: auto``); a
    ConfigError with the numbers and the changes that fit when it does not (``fit: check``).
    ``streams``: how many CPU streams share a micro-batch under a config."""
    limit, source = memory_limit(config)
    chunk = loss_chunk(config, vocab_size(model_config))

    def estimate(
        cfg: TrainConfig, built: Built, recompute: Recompute, chunks: bool = True
    ) -> MemoryEstimate:
        """``chunks``: checkpointed blocks may take attention in chunks where they do not fit
        without it."""
        model, _, _, plan = built
        n = trained_blocks(model, cfg)
        blocks = n if recompute is True else 0 if _rank(recompute) < 2 else int(recompute)
        args = (model, cfg, plan, model_config, limit, blocks, chunk, streams(cfg))
        if recompute == "attention":
            return estimate_memory(*args, chunk_attention=True)
        whole = estimate_memory(*args)
        if not blocks or not chunks or whole.fits is not False or on_gpu():
            return whole
        # Checkpointed blocks recompute attention's forward once already; chunking it as well
        # recomputes q k^T a third time: taken only where the plan needs it.
        return estimate_memory(*args, chunk_attention=True)

    built = build(config)
    if config.grad_checkpoint == "auto":
        tried = []
        for mode, chunks in _automatic(config, built):
            tried.append((mode, estimate(config, built, mode, chunks)))
            if tried[-1][1].fits is not False:
                break
        # None fits: the least memory, for the changes below to start from (on a model of few
        # blocks the block being differentiated costs more than checkpointing saves).
        fits = tried[-1][1].fits is not False
        mode, memory = tried[-1] if fits else min(tried, key=lambda t: t[1].total)
    else:
        mode = config.grad_checkpoint
        memory = estimate(config, built, mode)
    config = config.model_copy(update={"grad_checkpoint": mode})
    if memory.fits is not False or config.fit == "off":
        return Fitted(config, *built, memory)

    fitting: list[tuple[str, dict[str, Any], MemoryEstimate]] = []
    for kind, changes in _alternatives(config, built[1]):
        if any(k == kind for k, _, _ in fitting):
            continue  # the first fitting change of each kind is the one to show
        cfg = config.model_copy(update=changes)
        rebuilt = built if set(changes) <= {"grad_checkpoint"} else build(cfg)
        e = estimate(cfg, rebuilt, changes["grad_checkpoint"])  # every change names it
        if e.fits:
            if config.fit == "auto":
                return Fitted(cfg, *rebuilt, e, changes)
            fitting.append((kind, changes, e))
    raise ConfigError(_refusal(memory, source, built[3], fitting))


def _automatic(config: TrainConfig, built: Built) -> Iterator[tuple[Recompute, bool]]:
    """What ``grad_checkpoint: auto`` tries, in order, and whether checkpointed blocks may chunk
    attention: each block checkpointed costs about a forward of it again, so as few as fit (all
    of them: true); with attention in chunks as well (a third q k^T, at 1k on SmolLM2 1.3x the
    step where half the blocks checkpointed cost 1.39x) only where no number of blocks fits
    without."""
    n = trained_blocks(built[0], config)
    blocks: tuple[Recompute, ...] = (*range(1, n), True)
    yield from ((False, True), ("attention", True))
    for chunks in (False, True):
        yield from ((k, chunks) for k in blocks)


def recomputed(memory: dict[str, Any]) -> str:
    """What the backward recomputes, in words (a MemoryEstimate's dict)."""
    k, n = memory["checkpointed_blocks"], memory["trained_blocks"]
    chunks = "attention in chunks" if memory["chunked_attention"] else ""
    if not k:
        return "attention recomputed in chunks" if chunks else ""
    blocks = "blocks checkpointed" if k == n else f"{k} of {n} blocks checkpointed"
    return ", ".join(filter(None, (blocks, chunks)))


def _alternatives(config: TrainConfig, base: Base) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, changes) in the order ``fit: auto`` tries them."""
    for mode in (False, "attention", True):
        if _rank(mode) > _rank(config.grad_checkpoint):
            yield "grad_checkpoint", {"grad_checkpoint": mode}
    ckpt = {"grad_checkpoint": True}
    rows = config.batch_size
    fewer = [b for b in range(rows - 1, 0, -1) if rows % b == 0]
    for b in fewer:
        yield "batch_size", {**ckpt, "batch_size": b, "grad_accumulation": _more(config, b)}
    smallest = {**ckpt, "batch_size": 1, "grad_accumulation": _more(config, 1)}
    quantized = base.quantized_bits or config.quantize is not None or config.method == "full"
    for bits in () if quantized else (8, 4):
        yield "quantize", {**smallest, "quantize": bits}
    width = config.max_seq_length // 2
    while width >= MIN_ROW:
        yield "max_seq_length", {**smallest, "max_seq_length": width}
        width //= 2


def _more(config: TrainConfig, rows: int) -> int:
    return config.grad_accumulation * config.batch_size // rows


def size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _refusal(
    memory: MemoryEstimate,
    source: str,
    plan: Plan,
    fitting: list[tuple[str, dict[str, Any], MemoryEstimate]],
) -> str:
    rows, width = plan.widest_batch()
    how = recomputed(memory.to_dict())
    head = (
        f"the run needs about {size(memory.total)} but may use {size(memory.available)} "
        f"({source}): weights {size(memory.weights)}, adapters {size(memory.adapters)}, gradients "
        f"{size(memory.gradients)}, optimizer {size(memory.optimizer)}, activations "
        f"{size(memory.activations)} for {rows} rows of {width} tokens"
        + (f", {how}" if how else "")
    )
    if memory.available is not None and memory.weights > memory.available:
        head += f"; the weights alone are more than {size(memory.available)}"
    if not fitting:
        return head + ". No change of batch size, checkpointing, quantization or row width fits."
    shown = "; ".join(
        ", ".join(f"{k}: {str(v).lower()}" for k, v in changes.items()) + f" ({size(e.total)})"
        for _, changes, e in fitting
    )
    return f"{head}. These fit: {shown}. Set them, or --fit auto to take the first."


@contextmanager
def memory_limits(memory: MemoryEstimate) -> Iterator[int | None]:
    """MLX's limits for the run, given back after it.

    The memory limit is the plan's total, on every device. MLX encodes operations ahead of the
    ones it computes and allocates each output when it encodes it; past its memory limit it
    waits for work in flight before encoding more. Its default limit (80% of RAM on the CPU,
    1.5x the working set on Metal) lets a slow step run far ahead: on SmolLM2 at 2k with
    checkpointed blocks and attention in chunks, 1.48 GiB at the default, 1.06 GiB computing
    one operation at a time, 1.18 GiB (at the same speed) under a limit of 1.12 GiB, and 1.31
    GiB held to its plan of 1.28 GiB (1.25 since the chunked loss computes one chunk at a
    time). Held to the plan, the run's peak is the plan's where the plan counts all the run
    needs; where it does not, the trainer raises the limit (``raise_past_plan``).

    Metal also wires the estimate (as much as its recommended working set allows) so the
    weights are not paged out between steps. On every device the allocator's cache may hold
    what the budget leaves above the estimate; yields that headroom: the loop clears the cache
    when it grows past it (mlx-lm's clear_cache_threshold)."""
    headroom = None if memory.available is None else max(0, memory.available - memory.total)
    wired = None
    if mx.metal.is_available():
        recommended = int(mx.device_info().get("max_recommended_working_set_size", 0))
        wired = mx.set_wired_limit(min(memory.total, recommended) if recommended else memory.total)
    cache = mx.set_cache_limit(headroom) if headroom is not None else None
    limit = mx.set_memory_limit(memory.total)
    try:
        yield headroom
    finally:
        mx.set_memory_limit(limit)
        if cache is not None:
            mx.set_cache_limit(cache)
        if wired is not None:
            mx.set_wired_limit(wired)


def raise_past_plan(peak: int) -> dict[str, int] | None:
    """Where ``peak`` passed MLX's memory limit by ``OVER_PLAN``, raises the limit to
    ``OVER_PLAN`` x ``peak`` and returns what it did (the run's ``over_plan`` event); else
    None."""
    planned = mx.get_memory_limit()
    if peak <= OVER_PLAN * planned:
        return None
    limit = int(OVER_PLAN * peak)
    mx.set_memory_limit(limit)
    return {"peak": peak, "planned": planned, "limit": limit}

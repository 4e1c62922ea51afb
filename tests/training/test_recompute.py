"""Memory for compute changes nothing computed: checkpointed blocks and the chunked loss give the
loss and gradients of the plain model (float32), dropout included, and a trained run too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_loss import lora_model

from ftx.data import load_dataset
from ftx.training.batching import make_batch
from ftx.training.metrics import read_metrics

pytestmark = pytest.mark.mlx

Make = Callable[..., dict[str, Any]]
ROWS = [[0, 1], [2], [3, 4]]


def value_and_grads(
    model: Any, batch: Any, chunk: int | None = None, seed: int = 3
) -> tuple[float, dict[str, Any]]:
    import mlx.core as mx
    import mlx.nn as nn

    from ftx.training.forward import Forward
    from ftx.training.model import flatten
    from ftx.training.trainer import _arrays

    mx.random.seed(seed)
    fn = nn.value_and_grad(model, Forward(model, True, chunk).loss)
    loss, grads = fn(*_arrays(batch), mx.array(1.0))
    mx.eval(loss, grads)
    return loss.item(), dict(flatten(grads))


def assert_same(a: tuple[float, dict[str, Any]], b: tuple[float, dict[str, Any]]) -> None:
    import mlx.core as mx

    assert a[0] == pytest.approx(b[0], rel=1e-6)
    assert a[1].keys() == b[1].keys()
    for k, g in a[1].items():
        scale = max(1e-6, mx.abs(g).max().item())
        assert mx.abs(g - b[1][k]).max().item() <= 1e-5 * scale, k


@pytest.fixture
def batch(prepared: Path) -> Any:
    return make_batch(load_dataset(prepared, "train"), ROWS, budget=512, packing=True)


def test_checkpointed_blocks_give_the_same_loss_and_gradients(
    make_config: Make, batch: Any
) -> None:
    from ftx.training.recompute import checkpoint_blocks

    model = lora_model(make_config())
    model.train()
    plain = value_and_grads(model, batch)
    classes = [type(b) for b in model.layers]
    restore = checkpoint_blocks(list(model.layers))
    assert all(type(b).__name__.startswith("Checkpointed") for b in model.layers)
    assert_same(value_and_grads(model, batch), plain)
    restore()
    assert [type(b) for b in model.layers] == classes


def test_a_checkpointed_block_differentiates_the_dropout_mask_its_loss_used(
    make_config: Make, batch: Any
) -> None:
    """The recomputation draws the same masks: the loss moves along the gradient by what the
    gradient says (a first-order check), which another mask in the backward would break."""
    from mlx.utils import tree_flatten, tree_unflatten

    from ftx.training.recompute import checkpoint_blocks

    model = lora_model(make_config(dropout=0.5))
    model.train()
    checkpoint_blocks(list(model.layers))
    loss, grads = value_and_grads(model, batch, seed=11)
    norm = sum((g * g).sum().item() for g in grads.values()) ** 0.5
    eps = 1e-3
    moved = tree_unflatten(
        [(k, v + eps * grads[k] / norm) for k, v in tree_flatten(model.trainable_parameters())]
    )
    model.update(moved)
    after, _ = value_and_grads(model, batch, seed=11)  # the same seed: the same masks
    assert norm > 0
    assert (after - loss) / eps == pytest.approx(norm, rel=0.05)


def test_the_chunked_loss_equals_the_loss_in_one_piece(make_config: Make, batch: Any) -> None:
    model = lora_model(make_config())
    trained = int(batch.positions.shape[0])
    assert trained > 8  # several chunks, the last one short
    assert_same(value_and_grads(model, batch, chunk=3), value_and_grads(model, batch))


def test_the_chunked_loss_holds_one_chunk_of_logits_at_once() -> None:
    """MLX schedules independent chunks side by side: unless each waits for the last, the
    logits of every chunk are alive together (24 here, 2.4 GB for 8k positions of SmolLM2)."""
    import mlx.core as mx
    import mlx.nn as nn

    from ftx.training.recompute import chunked_cross_entropy

    vocab, width, chunk, chunks = 8192, 64, 128, 24
    head = nn.Embedding(vocab, width)
    hidden = mx.random.normal((chunk * chunks, width), key=mx.random.key(0))
    targets = mx.random.randint(0, vocab, (chunk * chunks,), key=mx.random.key(1))
    weights = mx.ones((chunk * chunks,))
    mx.eval(head.parameters(), hidden, targets, weights)
    loss = chunked_cross_entropy(head.as_linear, chunk)
    grad = mx.grad(lambda h: loss(h, targets, weights))
    # One operation at a time: what is alive then is the evaluation order's, not MLX's
    # running ahead (which a run bounds by its plan, fit.memory_limits).
    limit = mx.set_memory_limit(1)
    try:
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        mx.eval(grad(hidden))
        peak = mx.get_peak_memory() - base
    finally:
        mx.set_memory_limit(limit)
    one_chunk = chunk * vocab * 4
    assert peak < 4 * one_chunk, peak / one_chunk


@pytest.mark.parametrize(
    "over", [{"grad_checkpoint": True}, {"grad_checkpoint": 1}, {"loss_chunk": 5}]
)
def test_a_run_with_less_memory_trains_the_same(over: dict[str, Any], make_config: Make) -> None:
    from ftx import train

    keys = make_config(report_every=1, grad_accumulation=2)
    base = train({**keys, "loss_chunk": "off", "grad_checkpoint": False})
    other = train({**keys, "out": Path(keys["out"]).with_name("other"), **over})
    assert other.memory.grad_checkpoint is bool(over.get("grad_checkpoint"))
    a = [r["train_loss"] for r in read_metrics(base.run_dir / "metrics.jsonl") if "train_loss" in r]
    b = [
        r["train_loss"] for r in read_metrics(other.run_dir / "metrics.jsonl") if "train_loss" in r
    ]
    assert len(a) == 4
    assert b == pytest.approx(a, rel=1e-5)

"""Chunked attention computes MLX's attention: the same output and gradients (float32) for every
mask mlx-lm's models pass, grouped heads, chunks that do not divide the row; and a model trained
under it gets the loss and gradients of the plain model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_loss import lora_model
from test_recompute import ROWS, assert_same, value_and_grads

from ftx.data import load_dataset
from ftx.training.batching import make_batch

pytestmark = pytest.mark.mlx

Make = Callable[..., dict[str, Any]]


def _masks(length: int, keys: int) -> dict[str, Any]:
    import mlx.core as mx

    segments = mx.array([[0] * (keys // 3) + [1] * (keys - keys // 3)] * 2)
    causal = mx.arange(keys)[None] <= mx.arange(length)[:, None] + (keys - length)
    block = (segments[:, :, None] == segments[:, None, :])[:, None, -length:] & causal
    return {
        "causal": "causal",
        "none": None,
        "block (rows, 1, L, S) boolean": block,
        "additive (L, S)": mx.random.normal((length, keys), key=mx.random.key(5)),
        "per head (rows, H, L, S) boolean": mx.broadcast_to(block, (2, 6, length, keys)),
    }


# The masks that hide every key after its query, as a training run's do.
WITHIN_CAUSAL = ("causal", "block (rows, 1, L, S) boolean", "per head (rows, H, L, S) boolean")


@pytest.mark.parametrize(
    ("mask_name", "within_causal"),
    [(m, False) for m in _masks(4, 4)] + [(m, True) for m in WITHIN_CAUSAL],
)
@pytest.mark.parametrize(("length", "keys", "chunk"), [(50, 50, 7), (50, 50, 64), (20, 36, 8)])
def test_chunked_attention_is_mlx_s_attention(
    mask_name: str, length: int, keys: int, chunk: int, within_causal: bool
) -> None:
    import mlx.core as mx

    from ftx.training.attention import chunked_attention

    rng = [mx.random.key(i) for i in range(3)]
    q = mx.random.normal((2, 6, length, 16), key=rng[0])
    k = mx.random.normal((2, 2, keys, 16), key=rng[1])
    v = mx.random.normal((2, 2, keys, 16), key=rng[2])
    mask = _masks(length, keys)[mask_name]
    weights = mx.arange(16) / 16

    def theirs(q: Any, k: Any, v: Any) -> Any:
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=mask)
        return (out * weights).sum()

    def ours(q: Any, k: Any, v: Any) -> Any:
        return (chunked_attention(q, k, v, 0.3, mask, chunk, within_causal) * weights).sum()

    a, da = mx.value_and_grad(theirs, argnums=(0, 1, 2))(q, k, v)
    b, db = mx.value_and_grad(ours, argnums=(0, 1, 2))(q, k, v)
    assert b.item() == pytest.approx(a.item(), rel=1e-5, abs=1e-4)
    for x, y in zip(da, db, strict=True):
        assert y.shape == x.shape
        assert mx.abs(x - y).max().item() <= 1e-5 * max(1.0, mx.abs(x).max().item())


def test_efficient_attention_serves_large_calls_and_is_given_back() -> None:
    import mlx.core as mx

    from ftx.training.attention import efficient_attention, query_chunk

    original = mx.fast.scaled_dot_product_attention
    with efficient_attention(budget=1024):
        assert mx.fast.scaled_dot_product_attention is not original
    assert mx.fast.scaled_dot_product_attention is original
    assert query_chunk(1, 9, 16384, budget=2**20) == 64  # never fewer than a matmul's worth
    assert query_chunk(1, 1, 1024, budget=2**20) == 256


def test_a_model_under_efficient_attention_has_the_plain_loss_and_gradients(
    make_config: Make, prepared: Path
) -> None:
    from ftx.training.attention import efficient_attention

    batch = make_batch(load_dataset(prepared, "train"), ROWS, budget=512, packing=True)
    model = lora_model(make_config())
    model.train()
    plain = value_and_grads(model, batch)
    with efficient_attention(budget=64):  # every layer's attention in chunks
        assert_same(value_and_grads(model, batch), plain)

"""Attention whose memory grows with the row, not with its square.

MLX has no fused attention kernel on the CPU: ``mx.fast.scaled_dot_product_attention`` falls
back to ``softmax(q k^T) v`` there, and its backward keeps the (heads x L x L) weights of every
trained block (one block at a time when checkpointed, still L^2). At 16k tokens that is tens of
GB for a 135M model. ``chunked_attention`` computes the same function a chunk of queries at a
time and keeps only the output and each query's log-sum-exp; its backward recomputes the weights
chunk by chunk (the FlashAttention backward: dV, dP, dS = P (dP - rowsum(dO O)), dQ, dK), so
at most one chunk's (heads x chunk x L) arrays exist at once.

mlx-lm's attention layers all call ``mx.fast.scaled_dot_product_attention`` (through
``mlx_lm.models.base``), so ``efficient_attention`` puts this function in its place while a run
trains: no architecture's code changes. Calls it cannot serve (attention sinks) or that are small
enough (the weights under ``CHUNK_BYTES``) go to MLX's own function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ftx.runtime.mlx import mx

# The attention weights one chunk of queries may hold (float32, all heads of all rows).
CHUNK_BYTES = 16 * 2**20
# Fewer queries per chunk than this and the matmuls stop being matmuls.
MIN_CHUNK = 64

Attention = Callable[..., mx.array]


def query_chunk(rows: int, heads: int, keys: int, budget: int = CHUNK_BYTES) -> int:
    """Queries per chunk so that one chunk's float32 weights fit ``budget``."""
    return max(MIN_CHUNK, budget // max(1, rows * heads * keys * 4))


def _masked(s: mx.array, mask: mx.array | None, start: mx.array | None) -> mx.array:
    """Scores with the mask applied: causal from row position ``start`` (lower right aligned,
    as MLX does, by the caller's choice of ``start``), or a boolean or additive mask part."""
    if start is not None:
        rows = mx.arange(s.shape[-2])[:, None] + start
        return mx.where(mx.arange(s.shape[-1])[None] <= rows, s, -mx.inf)
    if mask is None:
        return s
    return mx.where(mask, s, -mx.inf) if mask.dtype == mx.bool_ else s + mask


# One chunk's forward and backward, compiled so that the elementwise steps between the matmuls
# are fused: fewer (heads x chunk x L) arrays at once (measured: 0.7x the peak of the plain ops).
# q is (B, kv heads, group, C, D), k and v (B, kv heads, 1, S, D), all float32.
@mx.compile
def _forward_chunk(
    q: mx.array, k: mx.array, v: mx.array, mask: mx.array | None, start: mx.array | None
) -> tuple[mx.array, mx.array]:
    s = _masked(q @ k.swapaxes(-1, -2), mask, start)
    lse = mx.logsumexp(s, axis=-1, keepdims=True)
    return mx.exp(s - lse) @ v, lse


@mx.compile
def _backward_chunk(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    mask: mx.array | None,
    start: mx.array | None,
    d_out: mx.array,
    lse: mx.array,
    delta: mx.array,
) -> tuple[mx.array, mx.array, mx.array]:
    p = mx.exp(_masked(q @ k.swapaxes(-1, -2), mask, start) - lse)
    ds = p * (d_out @ v.swapaxes(-1, -2) - delta)
    dk = (ds.swapaxes(-1, -2) @ q).sum(axis=2)
    dv = (p.swapaxes(-1, -2) @ d_out).sum(axis=2)
    return ds @ k, dk, dv


def _grouped_mask(mask: mx.array | str | None, q_heads: int, kv_heads: int) -> Any:
    """A mask array shaped to broadcast against (B, kv heads, group, L, S)."""
    if mask is None or isinstance(mask, str):
        return mask
    m = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
    if m.shape[1] == 1:
        return m[:, :, None]
    return m.reshape(m.shape[0], kv_heads, q_heads // kv_heads, *m.shape[2:])


def chunked_attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    scale: float,
    mask: mx.array | str | None,
    chunk: int,
    within_causal: bool = False,
) -> mx.array:
    """``mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)`` computed
    ``chunk`` queries at a time, forward and backward. q is (B, H, L, D), k and v (B, H_kv, S, D).
    With ``mask="causal"``, or a mask array that hides every key after its query (lower right
    aligned) and ``within_causal``, each chunk reads only the keys it can see, half the work of
    the whole row; softmax in float32."""
    b, heads, length, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    group = heads // kv_heads
    causal = isinstance(mask, str)
    later_hidden = causal or within_causal
    offset = keys - length
    grouped = _grouped_mask(mask, heads, kv_heads)
    bounds = [(c, min(c + chunk, length)) for c in range(0, length, chunk)]

    def seen(end: int) -> int:
        return min(keys, end + offset) if later_hidden else keys

    def parts(q: mx.array, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        f32 = mx.float32
        qg = (q.astype(f32) * scale).reshape(b, kv_heads, group, length, dim)
        return qg, k.astype(f32)[:, :, None], v.astype(f32)[:, :, None]

    def chunk_mask(start: int, end: int) -> tuple[mx.array | None, mx.array | None]:
        """The mask part of queries [start, end) and keys they see, or the causal start."""
        if causal:
            return None, mx.array(start + offset)
        if grouped is None:
            return None, None
        return grouped[..., start:end, : seen(end)], None

    @mx.custom_function
    def attend(q: mx.array, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        qg, kg, vg = parts(q, k, v)
        outs, lses = [], []
        for start, end in bounds:
            n = seen(end)
            o, lse = _forward_chunk(
                qg[..., start:end, :], kg[..., :n, :], vg[..., :n, :], *chunk_mask(start, end)
            )
            outs.append(o)
            lses.append(lse)
        out = mx.concatenate(outs, axis=-2).reshape(b, heads, length, dim)
        return out.astype(q.dtype), mx.concatenate(lses, axis=-2)

    @attend.vjp
    def attend_vjp(
        primals: tuple[mx.array, mx.array, mx.array],
        cotangents: tuple[mx.array, mx.array],
        outputs: tuple[mx.array, mx.array],
    ) -> tuple[mx.array, mx.array, mx.array]:
        q, k, v = primals
        d_out = cotangents[0].reshape(b, kv_heads, group, length, dim).astype(mx.float32)
        out, lse = outputs
        out = out.reshape(b, kv_heads, group, length, dim).astype(mx.float32)
        qg, kg, vg = parts(q, k, v)
        delta = (d_out * out).sum(axis=-1, keepdims=True)
        dk = mx.zeros((b, kv_heads, keys, dim), dtype=mx.float32)
        dv = mx.zeros((b, kv_heads, keys, dim), dtype=mx.float32)
        dqs: list[mx.array] = []
        for start, end in bounds:
            n = seen(end)
            if dqs:
                # Each chunk starts once the last one is done, so the order of evaluation
                # frees one chunk's weights before the next one's exist.
                qg, kg, vg = mx.depends([qg, kg, vg], [dqs[-1], dk, dv])
            dq, dk_part, dv_part = _backward_chunk(
                qg[..., start:end, :],
                kg[..., :n, :],
                vg[..., :n, :],
                *chunk_mask(start, end),
                d_out[..., start:end, :],
                lse[..., start:end, :],
                delta[..., start:end, :],
            )
            dqs.append(dq)
            dk[:, :, :n] += dk_part
            dv[:, :, :n] += dv_part
        dq = mx.concatenate(dqs, axis=-2).reshape(b, heads, length, dim) * scale
        return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)

    out: mx.array = attend(q, k, v)[0]  # type: ignore[index]
    return out


@contextmanager
def efficient_attention(budget: int = CHUNK_BYTES) -> Iterator[None]:
    """While it is open, attention whose weights exceed ``budget`` bytes is chunked. It is opened
    around training a causal LM only, where every mask array (ftx's block-diagonal causal mask
    of packed rows, mlx-lm's sliding windows) hides the keys after each query: a chunk reads
    only the keys before its end, half the q k^T of reading them all (on SmolLM2 at 1k,
    ``grad_checkpoint: attention`` went from 1.65x to 1.3x the step time with it)."""
    fast = mx.fast
    original: Attention = fast.scaled_dot_product_attention

    def attention(
        q: mx.array,
        k: mx.array,
        v: mx.array,
        *,
        scale: float,
        mask: mx.array | str | None = None,
        sinks: mx.array | None = None,
        **rest: Any,
    ) -> mx.array:
        weights = math.prod(q.shape[:3]) * k.shape[2] * 4
        if sinks is not None or rest or weights <= budget:
            return original(q, k, v, scale=scale, mask=mask, sinks=sinks, **rest)
        chunk = query_chunk(q.shape[0], q.shape[1], k.shape[2], budget)
        return chunked_attention(q, k, v, scale, mask, chunk, within_causal=True)

    fast.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        fast.scaled_dot_product_attention = original

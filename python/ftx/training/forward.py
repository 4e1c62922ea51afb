"""The loss of a micro-batch: block-diagonal attention for packed rows, logits only where a
token is trained.

Packed rows. mlx-lm's models build their attention mask as ``create_attention_mask(h, cache)``,
which asks ``cache.make_mask(...)`` when the cache has one, and each attention layer calls
``cache.update_and_fetch(k, v)`` and applies RoPE at ``cache.offset``. ``BlockMask`` is a
stand-in cache that returns the block-diagonal causal mask, hands keys and values straight back
and has offset 0, so every architecture following that protocol (llama, qwen2, qwen3, mistral,
gemma, phi3, ...) attends within records without a change to its code. Positions keep counting
across the records of a row: RoPE scores depend only on relative positions, so with the mask a
packed record computes what it computes alone. Both facts are checked on the real model before
training (``Forward.probe``), and packing is refused where they do not hold.

Trained positions only. The hidden states at trained positions are gathered before the LM head
(``lm_head``, or the tied embedding), so the (tokens x vocab) logits exist only where a loss is
taken, and there a chunk of positions at a time (``recompute.chunked_cross_entropy``). Models
whose ``__call__`` does more than ``head(model.model(x))`` (logit soft-capping, ...) are
detected by the same probe and computed in full, then gathered.
"""

from __future__ import annotations

from collections.abc import Callable

from ftx.runtime.mlx import mx, nn

from ftx.errors import ConfigError
from ftx.training.model import scalar
from ftx.training.recompute import chunked_cross_entropy

# Token ids of the probe: below any real vocabulary size.
PROBE_VOCAB = 64
# Packed and one-by-one results differ only by float32 rounding.
PROBE_TOLERANCE = 1e-3


class BlockMask:
    """Duck-types mlx-lm's KV cache to give every attention layer a fixed mask."""

    offset = 0

    def __init__(self, mask: mx.array) -> None:
        self.mask = mask

    def make_mask(
        self, n: int, return_array: bool = False, window_size: int | None = None
    ) -> mx.array:
        if window_size is None:
            return self.mask
        idx = mx.arange(self.mask.shape[-1])
        return self.mask & (idx[:, None] < idx[None] + window_size)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return keys, values


def block_mask(segments: mx.array) -> mx.array:
    """(rows, 1, L, L) boolean: causal, and only within the same segment."""
    n = segments.shape[1]
    causal = mx.arange(n)[:, None] >= mx.arange(n)[None]
    same = segments[:, :, None] == segments[:, None, :]
    return (same & causal)[:, None]


class Forward:
    """How this model turns a batch into a loss; the two choices are fixed before compiling."""

    def __init__(self, model: nn.Module, packed: bool, loss_chunk: int | None = None) -> None:
        self.model = model
        self.packed = packed
        self.loss_chunk = loss_chunk
        self.gather_head = hasattr(model, "model") and callable(self.head)

    @property
    def head(self) -> Callable[[mx.array], mx.array] | None:
        m = self.model
        if "lm_head" in m:
            lm_head: Callable[[mx.array], mx.array] = m.lm_head
            return lm_head
        embed = getattr(getattr(m, "model", None), "embed_tokens", None)
        return getattr(embed, "as_linear", None)

    def _cache(self, segments: mx.array | None) -> list[BlockMask] | None:
        if segments is None:
            return None
        return [BlockMask(block_mask(segments))] * len(self.model.layers)

    def features(self, inputs: mx.array, segments: mx.array | None) -> mx.array:
        """Hidden states (gathered head) or logits, flattened to (rows * L, width)."""
        cache = self._cache(segments)
        run = self.model.model if self.gather_head else self.model
        out: mx.array = run(inputs, cache=cache)
        return out.reshape(-1, out.shape[-1])

    def logits(self, features: mx.array) -> mx.array:
        head = self.head
        if self.gather_head and head is not None:
            return head(features)
        return features

    def loss(
        self,
        inputs: mx.array,
        segments: mx.array | None,
        positions: mx.array,
        targets: mx.array,
        weights: mx.array,
        norm: mx.array,
    ) -> mx.array:
        """Summed cross-entropy at trained positions over ``norm``, the trained tokens of the
        whole optimizer step: summing micro-batches gives the step's mean over tokens."""
        features = self.features(inputs, segments)[positions]
        head = self.head
        if self.loss_chunk is not None and self.gather_head and head is not None:
            return chunked_cross_entropy(head, self.loss_chunk)(features, targets, weights) / norm
        logits = self.logits(features).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, targets) * weights
        return ce.sum() / norm

    def probe(self) -> None:
        """Checks the two shortcuts on this very model: the gathered head equals the model's
        own logits, and a packed row equals its records run one by one."""
        was_training = self.model.training
        self.model.eval()
        try:
            a = mx.random.randint(0, PROBE_VOCAB, (1, 7), key=mx.random.key(1))
            b = mx.random.randint(0, PROBE_VOCAB, (1, 5), key=mx.random.key(2))
            if self.gather_head:
                full = self.model(a)
                full = full.reshape(-1, full.shape[-1])
                self.gather_head = _close(self.logits(self.features(a, None)), full)
            if self.packed:
                row = mx.concatenate([a, b], axis=1)
                segments = mx.array([[0] * 7 + [1] * 5])
                packed = self.features(row, segments)
                alone = mx.concatenate([self.features(a, None), self.features(b, None)])
                if not _close(packed, alone):
                    raise ConfigError(
                        "packing: this architecture does not take ftx's block-diagonal mask "
                        "(or does not use relative positions); set packing: false"
                    )
        finally:
            self.model.train(was_training)


def _close(x: mx.array, y: mx.array) -> bool:
    scale = max(1.0, scalar(mx.abs(y).max()))
    return x.shape == y.shape and scalar(mx.abs(x - y).max()) <= PROBE_TOLERANCE * scale

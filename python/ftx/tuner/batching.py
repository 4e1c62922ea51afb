"""From a memory-mapped prepared split to micro-batches, in NumPy (no MLX here).

A record of ``n`` tokens feeds its first ``n - 1`` tokens as inputs; position ``j`` is trained
(predicts token ``j + 1``) when the mask of token ``j + 1`` is set. Only the records of one
micro-batch are ever copied out of the memory map.

Packing places records into rows of ``max_seq_length`` tokens by best-fit decreasing; each
token carries the index of its record in the row (``segments``) so attention can be made
block-diagonal. Padding mode puts one record per row and groups records of similar length.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ftx.data import PreparedDataset

Rows = list[list[int]]
# Row widths are rounded up to a multiple of this, so few distinct shapes reach the compiler.
WIDTH_MULTIPLE = 32


@dataclass(frozen=True)
class Batch:
    """One micro-batch. ``positions`` index the flattened ``inputs``; entries past ``trained``
    are padding (weight 0) that keep the number of distinct shapes small."""

    inputs: npt.NDArray[np.int32]
    segments: npt.NDArray[np.int32] | None
    positions: npt.NDArray[np.int32]
    targets: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float32]
    trained: int
    real_tokens: int

    @property
    def computed_tokens(self) -> int:
        return int(self.inputs.size)


def input_lengths(ds: PreparedDataset, budget: int) -> npt.NDArray[np.int64]:
    """Input tokens each record puts in a row: ``n - 1`` cut to ``budget``."""
    return np.clip(ds.lengths() - 1, 0, budget)


def trainable(ds: PreparedDataset) -> npt.NDArray[np.bool_]:
    """Records with at least one trained target: a mask bit set after the record's first token
    (which is never a target). One pass of ``maximum.reduceat`` over the memory-mapped uint8
    mask, on ``[start + 1, end)`` of each record (the even slots of the interleaved bounds)."""
    lengths = ds.lengths()
    starts = ds.offsets[:-1].astype(np.int64)
    ok = np.flatnonzero(lengths >= 2)
    out = np.zeros(len(lengths), dtype=bool)
    if not len(ok):
        return out
    bounds = np.empty(2 * len(ok), dtype=np.int64)
    bounds[0::2] = starts[ok] + 1
    bounds[1::2] = starts[ok] + lengths[ok]
    # The last record's end may be the end of the mask, which reduceat does not accept as an
    # index; its segment then simply runs to the end.
    hits = np.maximum.reduceat(ds.mask, bounds[:-1])[0::2]
    out[ok] = hits > 0
    return out


def pack_rows(lengths: npt.NDArray[np.int64], ids: Sequence[int], budget: int) -> Rows:
    """Best-fit decreasing: the longest record first, each into the fullest row it still fits.

    Rows are indexed by remaining capacity (a sorted list of capacities and a stack of rows per
    capacity), so each placement is a binary search: O(n log budget).
    """
    order = sorted(ids, key=lambda i: -int(lengths[i]))  # stable: ties keep the given order
    rows: Rows = []
    by_cap: dict[int, list[int]] = {}
    caps: list[int] = []
    for i in order:
        n = int(lengths[i])
        j = bisect_left(caps, n)
        if j == len(caps):
            row, rest = len(rows), budget - n
            rows.append([i])
        else:
            cap = caps[j]
            row, rest = by_cap[cap].pop(), cap - n
            if not by_cap[cap]:
                del by_cap[cap]
                caps.pop(j)
            rows[row].append(i)
        if rest > 0:
            if rest not in by_cap:
                by_cap[rest] = []
                insort(caps, rest)
            by_cap[rest].append(row)
    return rows


class Plan:
    """The rows and micro-batches of one split. Packed rows are built once (BFD over a seeded
    shuffle); each epoch reshuffles which rows share a micro-batch. With the block-diagonal
    mask, which records share a row does not change any gradient, so packing once is enough.
    ``seed=None`` keeps a fixed order (evaluation)."""

    def __init__(
        self, ds: PreparedDataset, batch_size: int, budget: int, packing: bool, seed: int | None
    ) -> None:
        self.ds, self.batch_size, self.budget, self.packing = ds, batch_size, budget, packing
        self.seed = seed
        self.lengths = input_lengths(ds, budget)
        self.ids = np.flatnonzero(trainable(ds))
        self.truncated = int(np.count_nonzero(ds.lengths()[self.ids] - 1 > budget))
        order = self.ids if seed is None else np.random.default_rng(seed).permutation(self.ids)
        self.order = [int(i) for i in order]
        self.rows = pack_rows(self.lengths, self.order, budget) if packing else None

    @property
    def num_batches(self) -> int:
        rows = len(self.rows) if self.rows is not None else len(self.ids)
        return -(-rows // self.batch_size)

    def widest_row(self) -> int:
        """Width of the widest micro-batch (rows are padded to a multiple of WIDTH_MULTIPLE)."""
        if self.rows is not None:
            fill = max((sum(int(self.lengths[i]) for i in row) for row in self.rows), default=0)
        else:
            fill = int(self.lengths[self.ids].max(initial=0))
        return _round_width(fill, self.budget)

    @property
    def trained_fraction(self) -> float:
        """Trained tokens per token over the whole split (from the manifest)."""
        return self.ds.num_trained_tokens / max(1, self.ds.num_tokens)

    def batches(self, epoch: int = 0) -> list[Rows]:
        """The micro-batches of one epoch, each a list of rows of record ids."""
        rng = None if self.seed is None else np.random.default_rng((self.seed, epoch))
        if self.rows is not None:
            rows = (
                self.rows
                if rng is None
                else [self.rows[i] for i in rng.permutation(len(self.rows))]
            )
            return [rows[k : k + self.batch_size] for k in range(0, len(rows), self.batch_size)]
        # Length buckets: neighbours in length share a micro-batch, so padding stays small.
        order = (
            self.order if rng is None else [self.order[i] for i in rng.permutation(len(self.order))]
        )
        by_len = sorted(order, key=lambda i: int(self.lengths[i]))
        batches = [
            [[i] for i in by_len[k : k + self.batch_size]]
            for k in range(0, len(by_len), self.batch_size)
        ]
        return batches if rng is None else [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[Batch]:
        """The micro-batches of epoch 0 (in fixed order when unseeded), built one at a time."""
        for rows in self.batches():
            yield make_batch(self.ds, rows, self.budget, self.packing)


def _round_width(fill: int, budget: int) -> int:
    return min(budget, -(-fill // WIDTH_MULTIPLE) * WIDTH_MULTIPLE)


def _bucket(k: int) -> int:
    """``k`` rounded up to within 1/8 of itself, so varying counts share a few shapes."""
    step = 1 << max(0, k.bit_length() - 3)
    return max(1, -(-k // step) * step)


def make_batch(ds: PreparedDataset, rows: Rows, budget: int, packing: bool) -> Batch:
    """Copies the records of ``rows`` out of the memory map into one padded micro-batch."""
    records = [[ds[i] for i in row] for row in rows]
    fills = [sum(min(len(t) - 1, budget) for t, _ in row) for row in records]
    width = _round_width(max(fills), budget)
    inputs = np.zeros((len(rows), width), dtype=np.int32)
    segments = np.zeros((len(rows), width), dtype=np.int32)
    positions: list[npt.NDArray[np.int64]] = [np.zeros(0, np.int64)]
    targets: list[npt.NDArray[np.uint32]] = [np.zeros(0, np.uint32)]
    for r, row in enumerate(records):
        # Padding gets a segment of its own so that no query row is fully masked (NaN).
        segments[r, :] = len(row)
        start = 0
        for s, (tokens, mask) in enumerate(row):
            n = min(len(tokens) - 1, budget)
            inputs[r, start : start + n] = tokens[:n]
            segments[r, start : start + n] = s
            hit = np.flatnonzero(mask[1 : n + 1])
            positions.append(r * width + start + hit)
            targets.append(tokens[1 : n + 1][hit])
            start += n
    pos, tgt = np.concatenate(positions), np.concatenate(targets)
    k = len(pos)
    size = _bucket(k)
    weights = np.zeros(size, dtype=np.float32)
    weights[:k] = 1.0
    return Batch(
        inputs=inputs,
        segments=segments if packing else None,
        positions=np.pad(pos, (0, size - k)).astype(np.int32),
        targets=np.pad(tgt, (0, size - k)).astype(np.int32),
        weights=weights,
        trained=k,
        real_tokens=sum(fills),
    )

"""From a memory-mapped prepared split to micro-batches, in NumPy (no MLX here).

A record of ``n`` tokens feeds its first ``n - 1`` tokens as inputs; position ``j`` is trained
(predicts token ``j + 1``) when the mask of token ``j + 1`` is set. Only the records of one
micro-batch are ever copied out of the memory map.

Packing places records into rows by best-fit decreasing; each token carries the index of its
record in the row (``segments``) so attention can be made block-diagonal. Rows come in a ladder
of widths up to ``max_seq_length``, each about 1.25x the one below: a record opens a row of the
narrowest width it fits, and shorter records fill the rest. A micro-batch holds rows of one
width, as many as make ``batch_size * max_seq_length`` token slots, so every micro-batch
carries about the same number of tokens, while attention, whose cost per token grows with the
row width, runs over rows little wider than their records. On SmolLM2-135M (CPU) a token costs
1.6x as much in a 512-wide row as in a 128-wide one; on alpaca-length records the ladder trains
15% more tokens/s than rows all 512 wide. Padding mode puts one record per row and groups
records of similar length.
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
# The narrowest row packing opens: below it a row's fixed costs outweigh attention's.
MIN_ROW_WIDTH = 64


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


def row_widths(budget: int) -> list[int]:
    """The widths packing may open, narrowest first: from ``budget`` down, each about 4/5 of
    the next and at least MIN_ROW_WIDTH narrower (multiples of WIDTH_MULTIPLE), down to
    MIN_ROW_WIDTH. So a record opens a row at most ~1.25x (or 64 tokens) wider than itself."""
    widths = [budget]
    while True:
        w = min(widths[-1] - MIN_ROW_WIDTH, _round_width(widths[-1] * 4 // 5, budget))
        w -= w % WIDTH_MULTIPLE
        if w < MIN_ROW_WIDTH:
            return widths[::-1]
        widths.append(w)


def pack_rows(
    lengths: npt.NDArray[np.int64], ids: Sequence[int], widths: Sequence[int]
) -> tuple[Rows, list[int]]:
    """Best-fit decreasing: the longest record first, each into the fullest row it still fits,
    else into a new row of the narrowest of ``widths`` (ascending) that holds it. Returns the
    rows and their widths.

    Rows are indexed by remaining capacity (a sorted list of capacities and a stack of rows per
    capacity), so each placement is a binary search: O(n log budget).
    """
    order = sorted(ids, key=lambda i: -int(lengths[i]))  # stable: ties keep the given order
    rows: Rows = []
    row_width: list[int] = []
    by_cap: dict[int, list[int]] = {}
    caps: list[int] = []
    for i in order:
        n = int(lengths[i])
        j = bisect_left(caps, n)
        if j == len(caps):
            width = widths[bisect_left(widths, n)]
            row, rest = len(rows), width - n
            rows.append([i])
            row_width.append(width)
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
    return rows, row_width


class Plan:
    """The rows and micro-batches of one split. Packed rows are built once (BFD over a seeded
    shuffle); each epoch reshuffles which rows of a width share a micro-batch, and the order of
    the micro-batches. With the block-diagonal mask, which records share a row does not change
    any gradient, so packing once is enough. ``seed=None`` keeps a fixed order (evaluation)."""

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
        self.rows: dict[int, Rows] | None = None
        if packing:
            rows, widths = pack_rows(self.lengths, self.order, row_widths(budget))
            self.rows = {w: [] for w in sorted(set(widths))}
            for row, w in zip(rows, widths, strict=True):
                self.rows[w].append(row)

    def rows_per_batch(self, width: int) -> int:
        """Rows of ``width`` in a packed micro-batch: ``batch_size * budget`` token slots."""
        return max(1, self.batch_size * self.budget // width)

    @property
    def num_batches(self) -> int:
        if self.rows is None:
            return -(-len(self.ids) // self.batch_size)
        return sum(-(-len(rows) // self.rows_per_batch(w)) for w, rows in self.rows.items())

    def widest_batch(self) -> tuple[int, int]:
        """(rows, width) of the widest micro-batch (rows padded to a multiple of
        WIDTH_MULTIPLE): the one whose attention needs the most memory."""
        if self.rows is not None:
            if not self.rows:
                return self.batch_size, 0
            w = max(self.rows)
            fill = max(sum(int(self.lengths[i]) for i in row) for row in self.rows[w])
            return min(self.rows_per_batch(w), len(self.rows[w])), _round_width(fill, w)
        fill = int(self.lengths[self.ids].max(initial=0))
        return self.batch_size, _round_width(fill, self.budget)

    @property
    def trained_fraction(self) -> float:
        """Trained tokens per token over the whole split (from the manifest)."""
        return self.ds.num_trained_tokens / max(1, self.ds.num_tokens)

    def batches(self, epoch: int = 0) -> list[Rows]:
        """The micro-batches of one epoch, each a list of rows of record ids."""
        rng = None if self.seed is None else np.random.default_rng((self.seed, epoch))
        if self.rows is not None:
            return self._packed_batches(rng)
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

    def _packed_batches(self, rng: np.random.Generator | None) -> list[Rows]:
        """Every row draws a key; each width's rows, in key order, are cut into micro-batches,
        which run in the order of their first row's key. So widths interleave evenly over the
        epoch, and with one width, micro-batches of ``k`` rows accumulated twice make the steps
        that micro-batches of ``2k`` rows make."""
        assert self.rows is not None
        n = sum(len(rows) for rows in self.rows.values())
        keys = list(range(n)) if rng is None else rng.permutation(n).tolist()
        keyed: list[tuple[int, Rows]] = []
        start = 0
        for w, rows in self.rows.items():
            ranked = sorted(
                zip(keys[start : start + len(rows)], rows, strict=True), key=lambda t: t[0]
            )
            start += len(rows)
            k = self.rows_per_batch(w)
            keyed += [
                (ranked[j][0], [row for _, row in ranked[j : j + k]])
                for j in range(0, len(ranked), k)
            ]
        return [batch for _, batch in sorted(keyed, key=lambda t: t[0])]

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

"""The statistics of ``inspect``: counts over the arrays of a ``Data`` (NumPy), records shown
as their decoded text with the trained stretches marked, and the lines repeated across records
(the engine's decoder). The same ``Data`` from an artifact or from raw files gives the same
answer."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ftx.inspection.sources import Data

# Reject codes whose lines name the record they copy (`kept_file`, `kept_line`): each kept
# record and its copies (exact, or near with `--near-dedup`) are one cluster.
CLUSTER_CODES: tuple[str, ...] = ("duplicate", "near_duplicate")
PERCENTILES = (50, 90, 99)

Columns = dict[str, npt.NDArray[Any]]


def columns(data: Data) -> Columns:
    """One entry per record, in the artifact's order (splits as the manifest lists them)."""
    parts: dict[str, list[npt.NDArray[Any]]] = {
        k: []
        for k in (
            "split",
            "index",
            "source",
            "line",
            "format",
            "turns",
            "tokens",
            "trained_tokens",
        )
    }
    for name, s in data.splits.items():
        n = len(s.offsets) - 1
        offsets = np.asarray(s.offsets, dtype=np.int64)
        trained_upto = np.concatenate([[0], np.cumsum(s.mask, dtype=np.int64)])
        parts["split"].append(np.full(n, name, dtype=object))
        parts["index"].append(np.arange(n, dtype=np.int64))
        for i, col in enumerate(("source", "line", "format", "turns")):
            parts[col].append(np.asarray(s.records[:, i], dtype=np.int64))
        parts["tokens"].append(offsets[1:] - offsets[:-1])
        parts["trained_tokens"].append(trained_upto[offsets[1:]] - trained_upto[offsets[:-1]])
    cols = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}
    cols["trained_fraction"] = cols["trained_tokens"] / np.maximum(cols["tokens"], 1)
    return cols


def _histogram(
    values: npt.NDArray[Any], bins: int, range_: tuple[float, float] | None = None
) -> list[dict[str, Any]]:
    counts, edges = np.histogram(values, bins=bins, range=range_)
    return [
        {"start": float(edges[i]), "end": float(edges[i + 1]), "records": int(c)}
        for i, c in enumerate(counts)
    ]


def _spread(values: npt.NDArray[Any]) -> dict[str, float]:
    out = {"min": float(values.min()), "mean": float(values.mean())}
    for q in PERCENTILES:
        out[f"p{q}"] = float(np.percentile(values, q))
    out["max"] = float(values.max())
    return out


def _grouped(cols: Columns, key: str, names: list[str]) -> list[dict[str, Any]]:
    found = np.bincount(cols[key], minlength=len(names))
    tokens = np.bincount(cols[key], weights=cols["tokens"], minlength=len(names))
    trained = np.bincount(cols[key], weights=cols["trained_tokens"], minlength=len(names))
    return [
        {
            "name": names[i],
            "records": int(found[i]),
            "tokens": int(tokens[i]),
            "trained_tokens": int(trained[i]),
        }
        for i in range(len(names))
        if key == "source" or found[i]
    ]


def record(data: Data, cols: Columns, i: int) -> dict[str, Any]:
    """Record ``i`` (of ``columns``): where it came from, its counts, and its text as
    ``segments`` of ``{"text", "trained"}``."""
    split, index = str(cols["split"][i]), int(cols["index"][i])
    s = data.splits[split]
    a, b = int(s.offsets[index]), int(s.offsets[index + 1])
    return {
        "split": split,
        "index": index,
        "file": data.inputs[int(cols["source"][i])],
        "line": int(cols["line"][i]),
        "format": data.formats[int(cols["format"][i])],
        "turns": int(cols["turns"][i]),
        "tokens": int(cols["tokens"][i]),
        "trained_tokens": int(cols["trained_tokens"][i]),
        "trained_fraction": float(cols["trained_fraction"][i]),
        "segments": data.decoder.segments(
            np.ascontiguousarray(s.tokens[a:b]), np.ascontiguousarray(s.mask[a:b])
        ),
    }


def _clusters(data: Data, cols: Columns, top: int) -> dict[str, Any]:
    """The records kept over their copies (the reject lines of ``CLUSTER_CODES``), the
    largest first."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for reject in data.reject_lines:
        file, line = reject.get("kept_file"), reject.get("kept_line")
        if isinstance(file, str) and isinstance(line, int):
            groups.setdefault((file, line), []).append(reject)
    order = sorted(groups, key=lambda k: (-len(groups[k]), k))
    source_of = {name: i for i, name in enumerate(data.inputs)}
    shown = []
    for file, line in order[:top]:
        copies = groups[(file, line)]
        at = np.flatnonzero((cols["source"] == source_of.get(file, -1)) & (cols["line"] == line))
        codes: dict[str, int] = {}
        for c in copies:
            codes[str(c["code"])] = codes.get(str(c["code"]), 0) + 1
        shown.append(
            {
                "kept": {"file": file, "line": line},
                "copies": len(copies),
                "codes": codes,
                "members": [
                    {"file": str(c["file"]), "line": int(c["line"]), "code": str(c["code"])}
                    for c in copies[:top]
                ],
                "record": record(data, cols, int(at[0])) if len(at) else None,
            }
        )
    return {
        "codes": list(CLUSTER_CODES),
        "clusters": len(groups),
        "records_in_clusters": sum(len(g) for g in groups.values()),
        "largest": shown,
    }


def summarize(data: Data, cols: Columns, *, top: int, lines: int, bins: int) -> dict[str, Any]:
    """The whole answer of ``inspect`` as one JSON-ready dict."""
    n = len(cols["tokens"])
    tokens, trained = int(cols["tokens"].sum()), int(cols["trained_tokens"].sum())
    lengths, fraction = cols["tokens"], cols["trained_fraction"]
    turns = np.bincount(cols["turns"]) if n else np.zeros(0, dtype=np.int64)
    # Stable sorts: ties keep the artifact's order, so the answer is one.
    longest = np.argsort(-lengths, kind="stable")[:top]
    shortest = np.argsort(lengths, kind="stable")[:top]
    lowest = np.argsort(fraction, kind="stable")[:top]
    return {
        "template": data.template,
        "records_read": data.records_read,
        "records": n,
        "duplicates": data.duplicates,
        "rejected": sum(data.rejects.values()),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_fraction": trained / max(tokens, 1),
        "splits": {
            name: {
                "records": len(s.offsets) - 1,
                "tokens": len(s.tokens),
                "trained_tokens": int(np.count_nonzero(s.mask)),
            }
            for name, s in data.splits.items()
        },
        "sources": _grouped(cols, "source", data.inputs),
        "formats": _grouped(cols, "format", data.formats),
        "lengths": {**_spread(lengths), "histogram": _histogram(lengths, bins)},
        "trained_fractions": {
            **_spread(fraction),
            "histogram": _histogram(fraction, 10, (0.0, 1.0)),
        },
        "turns": {
            "mean": float(cols["turns"].mean()),
            "max": int(cols["turns"].max()),
            "records": {str(t): int(c) for t, c in enumerate(turns) if c},
        },
        "rejects": dict(sorted(data.rejects.items(), key=lambda kv: (-kv[1], kv[0]))),
        "outliers": {
            "longest": [record(data, cols, int(i)) for i in longest],
            "shortest": [record(data, cols, int(i)) for i in shortest],
            "lowest_trained_fraction": [record(data, cols, int(i)) for i in lowest],
        },
        "repeated_lines": data.decoder.repeated_lines(
            [
                (np.ascontiguousarray(s.tokens), np.ascontiguousarray(s.offsets))
                for s in data.splits.values()
            ],
            lines,
        ),
        "duplicate_clusters": _clusters(data, cols, top),
    }

"""``ftx.prepare``: the Python face of the Rust pipeline."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ftx import _core
from ftx.errors import ConfigError
from ftx.tabular import is_tabular, to_json_lines

TrainOn = Literal["assistant", "last", "all"]
LengthPolicy = Literal["drop", "truncate", "error"]


@dataclass(frozen=True)
class SplitReport:
    """Counts of one split of a prepared artifact."""

    records: int
    tokens: int
    trained_tokens: int
    truncated: int
    lengths: dict[str, float] | None


@dataclass(frozen=True)
class PrepareReport:
    """What ``prepare`` did. ``manifest`` is the full ``manifest.json`` content."""

    out_dir: Path
    cached: bool
    seconds: float
    records_read: int
    rejected: int
    duplicates: int
    rejects: dict[str, int]
    splits: dict[str, SplitReport]
    template: str
    provenance: str
    manifest: dict[str, Any] = field(repr=False)

    @property
    def accepted(self) -> int:
        return sum(s.records for s in self.splits.values())

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.splits.values())

    @property
    def tokens_per_s(self) -> float:
        return float(self.manifest.get("run", {}).get("tokens_per_s", 0.0))

    @classmethod
    def from_json(cls, text: str) -> PrepareReport:
        m = json.loads(text)
        run = m.get("run", {})
        return cls(
            out_dir=Path(run.get("out_dir", ".")),
            cached=bool(run.get("cached", False)),
            seconds=float(run.get("seconds", 0.0)),
            records_read=int(m["records_read"]),
            rejected=int(m["rejected"]),
            duplicates=int(m["duplicates"]),
            rejects={str(k): int(v) for k, v in m["rejects"].items()},
            splits={
                name: SplitReport(
                    records=int(s["records"]),
                    tokens=int(s["tokens"]),
                    trained_tokens=int(s["trained_tokens"]),
                    truncated=int(s["truncated"]),
                    lengths=s["lengths"],
                )
                for name, s in m["splits"].items()
            },
            template=str(m["template"]),
            provenance=str(m["provenance"]),
            manifest=m,
        )


def prepare(
    inputs: str | Path | Sequence[str | Path],
    *,
    out: str | Path,
    model: str | Path | None = None,
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    format: str | None = None,
    columns: str | None = None,
    text_unit: Literal["line", "file"] = "line",
    dedup: bool = True,
    valid: float | int | str = 0,
    test: float | int | str = 0,
    seed: int = 0,
    max_length: int | None = None,
    length_policy: LengthPolicy = "drop",
    train_on: TrainOn = "assistant",
    max_reject_ratio: float | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> PrepareReport:
    """Turns raw chat/instruction data into a memory-mappable token artifact at ``out``.

    ``valid``/``test`` take a ratio (``0.1``) or a number of records (``500``). The artifact is
    published atomically; re-running with identical inputs and options is a cache hit.
    """
    for name, value in (("seed", seed), ("max_length", max_length), ("threads", threads)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ConfigError(f"{name} = {value!r}: must be a whole number, 0 or more")
    patterns = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(p) for p in inputs]
    files = [Path(p) for p in _core.expand_inputs(patterns)]
    with tempfile.TemporaryDirectory(prefix="ftx-tables-") as work:
        triples: list[tuple[str, str, int]] = []
        for f in files:
            if is_tabular(f):
                converted, offset = to_json_lines(f, Path(work))
                triples.append((str(converted), str(f), offset))
            else:
                triples.append((str(f), str(f), 0))
        text = _core.prepare(
            triples,
            str(out),
            model_dir=None if model is None else str(model),
            tokenizer=None if tokenizer is None else str(tokenizer),
            chat_template=chat_template,
            format=format,
            columns=columns,
            text_unit=text_unit,
            dedup=dedup,
            valid=str(valid),
            test=str(test),
            seed=seed,
            max_length=max_length,
            length_policy=length_policy,
            train_on=train_on,
            max_reject_ratio=max_reject_ratio,
            threads=threads,
            force=force,
            progress=progress,
        )
    return PrepareReport.from_json(text)

"""What a run reports while it trains: ``metrics.jsonl`` lines and a progress bar on stderr.

Both are callbacks of the trainer, so the loop knows nothing about files or terminals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ftx.files import write_text_atomic
from ftx.report import LiveProgress

# Every line of metrics.jsonl has all of these keys; a value not measured at that step is null.
KEYS = (
    "step",
    "epoch",
    "train_loss",
    "val_loss",
    "learning_rate",
    "grad_norm",
    "trained_tokens_per_s",
    "processed_tokens_per_s",
    "peak_memory",
    "elapsed",
)


def is_line(record: dict[str, Any]) -> bool:
    """Whether a record is a line of metrics.jsonl: an event, or a step that measured a loss."""
    return bool(record.get("event")) or any(
        record.get(k) is not None for k in ("train_loss", "val_loss")
    )


def line(record: dict[str, Any]) -> str:
    """A step's line has every key of ``KEYS``; an event's line (``event``: resumed,
    checkpoint, skipped_step, over_plan, stopped) has what the event says."""
    if record.get("event"):
        return json.dumps(record) + "\n"
    return json.dumps({k: record.get(k) for k in KEYS}) + "\n"


class MetricsLog:
    """Appends one JSON object per report to ``metrics.jsonl``, flushed as it goes, so a run
    can be followed (``tail -f``) and survives a crash up to its last report. A resumed run
    first rewrites the file (atomically) with the records of its checkpoint."""

    def __init__(self, path: Path, history: list[dict[str, Any]]) -> None:
        self.path = path
        write_text_atomic(path, "".join(line(r) for r in history))
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def __call__(self, record: dict[str, Any]) -> None:
        if not is_line(record):
            return
        # One write per line: a crash leaves whole lines.
        self._file.write(line(record))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class ProgressBar(LiveProgress):
    """Steps done, ETA and the latest losses on stderr."""

    name = "train"

    def __init__(
        self, total: int, enabled: bool, console: Console | None = None, start: int = 0
    ) -> None:
        super().__init__(enabled, console)
        self.total, self.start = total, start
        self._losses = {"train": "-", "val": "-"}
        self._speed = ""

    def columns(self) -> list[ProgressColumn]:
        name, line = super().columns()
        clock = [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
        return [name, BarColumn(), MofNCompleteColumn(), *clock, line]

    def task(self) -> dict[str, Any]:
        return {"total": self.total, "completed": self.start, "line": ""}

    def __call__(self, record: dict[str, Any]) -> None:
        if record.get("event"):
            return
        for key in ("train", "val"):
            if record.get(f"{key}_loss") is not None:
                self._losses[key] = f"{record[f'{key}_loss']:.4f}"
        if record.get("trained_tokens_per_s") is not None:
            self._speed = f" · {record['trained_tokens_per_s']:,.0f} trained tok/s"
        line = f"loss {self._losses['train']} · val {self._losses['val']}{self._speed}"
        self.show(completed=record["step"], line=line)

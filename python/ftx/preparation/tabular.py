"""Parquet and CSV inputs, read with polars' prebuilt wheel (a compiled arrow-rs would cost CI
minutes on every build) and handed to the engine as JSON lines, one batch at a time."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ftx.errors import ConfigError, DataError

TABULAR_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")
_BATCH_ROWS = 50_000


def is_tabular(path: Path) -> bool:
    return path.name.lower().endswith(TABULAR_SUFFIXES)


def to_json_lines(path: Path, workdir: Path) -> tuple[Path, int]:
    """Converts one table to a JSON-lines file in ``workdir``.

    Returns the new path and the line offset that makes the engine report the table's own row
    numbers (1 for a CSV header line, 0 for Parquet).
    """
    try:
        import polars as pl
    except ImportError as e:
        raise ConfigError(
            f"{path}: reading Parquet/CSV needs polars: pip install 'ftx[tabular]'"
        ) from e
    name = path.name.lower()
    if name.endswith((".csv", ".tsv")):
        sep = "\t" if name.endswith(".tsv") else ","
        lazy = pl.scan_csv(path, separator=sep, infer_schema=False)
        line_offset = 1
    else:
        lazy = pl.scan_parquet(path)
        line_offset = 0
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".jsonl", dir=workdir)
    out = Path(tmp)
    try:
        with open(fd, "wb") as f:
            for batch in lazy.collect_batches(chunk_size=_BATCH_ROWS):
                batch.write_ndjson(f)
    except pl.exceptions.PolarsError as e:  # a corrupt or truncated file, a ragged CSV
        kind = "CSV" if line_offset else "Parquet"
        raise DataError(f"{path}: not a readable {kind} file ({e})") from e
    return out, line_offset

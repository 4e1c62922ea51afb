"""``ftx.inspect``: what a dataset holds, from a prepared artifact or from raw files run through
the same engine (nothing written). The face: options and the typed answer; the reading is
``sources``, the counting ``statistics``, imported on the call. No MLX."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftx.errors import ConfigError

if TYPE_CHECKING:
    import numpy.typing as npt
    import polars
    from typing_extensions import Unpack

    from ftx.preparation import PrepareSettings

# One row per record in `Inspection.frame`, in this order.
FRAME_COLUMNS = (
    "split",
    "index",
    "file",
    "line",
    "format",
    "turns",
    "tokens",
    "trained_tokens",
    "trained_fraction",
)


@dataclass(frozen=True)
class Inspection:
    """What ``inspect`` found. ``summary`` is the JSON object ``ftx inspect --json`` prints
    (counts per split, source and format; token lengths and trained fractions with percentiles
    and histograms; turns; reject reasons; outliers and duplicate clusters as text with the
    trained stretches marked; repeated lines). ``frame`` has one row per record."""

    summary: dict[str, Any]
    columns: dict[str, npt.NDArray[Any]] = field(repr=False)
    inputs: list[str] = field(repr=False)
    formats: list[str] = field(repr=False)

    @property
    def frame(self) -> polars.DataFrame:
        """The per-record statistics as a polars DataFrame (columns ``FRAME_COLUMNS``). Needs
        polars: ``pip install 'ftx[tabular]'``."""
        try:
            import polars as pl
        except ImportError as e:
            raise ConfigError(
                "Inspection.frame needs polars, which is not installed: pip install 'ftx[tabular]'"
            ) from e
        import numpy as np

        c = self.columns
        return pl.DataFrame(
            {
                "split": c["split"].astype(str),
                "index": c["index"],
                "file": np.asarray(self.inputs, dtype=object)[c["source"]].astype(str)
                if len(c["source"])
                else np.zeros(0, dtype=str),
                "line": c["line"],
                "format": np.asarray(self.formats, dtype=object)[c["format"]].astype(str)
                if len(c["format"])
                else np.zeros(0, dtype=str),
                "turns": c["turns"],
                "tokens": c["tokens"],
                "trained_tokens": c["trained_tokens"],
                "trained_fraction": c["trained_fraction"],
            }
        )


def inspect(
    source: str | Path | Sequence[str | Path],
    *,
    model: str | Path | None = None,
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    threads: int | None = None,
    top: int = 3,
    lines: int = 10,
    bins: int = 12,
    progress: Callable[[dict[str, float]], None] | None = None,
    **settings: Unpack[PrepareSettings],
) -> Inspection:
    """Inspects a prepared artifact (``source`` one folder) or raw files (files or globs,
    with ``model`` or ``tokenizer``, and the settings ``prepare`` would take, run through its
    pass without writing anything). ``top`` records per outlier list and duplicate clusters,
    ``lines`` repeated lines, ``bins`` bars in the length histogram."""
    from ftx.inspection import sources, statistics

    for name, value in (("top", top), ("lines", lines), ("bins", bins)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} = {value!r}: must be a whole number, 1 or more")
    model_path = None if model is None else Path(model)
    tokenizer_path = None if tokenizer is None else Path(tokenizer)
    single = source if isinstance(source, (str, Path)) else None
    if single is not None and Path(single).is_dir():
        if settings or chat_template is not None or threads is not None:
            given = [*settings, *(["chat_template"] if chat_template else [])]
            raise ConfigError(
                f"{single} is a prepared artifact: its settings are fixed "
                f"(given: {', '.join(given) or 'threads'}); inspect the raw files to try others"
            )
        data = sources.from_artifact(
            Path(single), model_path, tokenizer_path, statistics.CLUSTER_CODES
        )
        origin: dict[str, Any] = {"kind": "artifact", "path": str(single)}
    else:
        if model_path is None and tokenizer_path is None:
            raise ConfigError(
                "raw files are tokenized as prepare would: give --model DIR or --tokenizer FILE "
                "(or inspect a prepared artifact folder)"
            )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads = {threads!r}: must be a whole number, 1 or more")
        data = sources.from_files(
            source,
            model=model_path,
            tokenizer=tokenizer_path,
            chat_template=chat_template,
            threads=threads,
            settings=settings,
            codes=statistics.CLUSTER_CODES,
            progress=progress,
        )
        origin = {"kind": "files", "inputs": data.inputs}
    cols = statistics.columns(data)
    if not len(cols["tokens"]):
        from ftx.errors import DataError

        raise DataError(
            f"{data.origin}: no usable record among {data.records_read} read "
            f"(rejects: {data.rejects or 'none'})"
        )
    summary = {
        "source": origin,
        **statistics.summarize(data, cols, top=top, lines=lines, bins=bins),
    }
    return Inspection(summary=summary, columns=cols, inputs=data.inputs, formats=data.formats)

"""How results look to a person: tables and progress, on the right stream."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.progress import Progress, ProgressColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ftx.preparation import PrepareReport

if TYPE_CHECKING:
    from typing_extensions import Self

# Progress and logs go to stderr so that stdout carries only results (one JSON object with --json).
err_console = Console(stderr=True)
out_console = Console()


class LiveProgress:
    """A rich progress display, transient, started and stopped with the context; inert when
    disabled. Subclasses say what it shows (``columns``, ``task``) and feed it (``show``)."""

    name = ""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or err_console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def columns(self) -> list[ProgressColumn]:
        return [TextColumn(f"[bold]{self.name}[/]"), TextColumn("{task.fields[line]}")]

    def task(self) -> dict[str, Any]:
        return {"line": "starting", "total": None}

    def __enter__(self) -> Self:
        if self.enabled:
            self._progress = Progress(*self.columns(), console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.name, **self.task())
        return self

    def show(self, **fields: Any) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, **fields)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


class ProgressDisplay(LiveProgress):
    """A live line of prepare's counters on stderr while the engine runs."""

    name = "prepare"

    def columns(self) -> list[ProgressColumn]:
        return [*super().columns(), TimeElapsedColumn()]

    def update(self, p: dict[str, float]) -> None:
        secs = max(p["elapsed_s"], 1e-9)
        line = (
            f"{int(p['records']):,} records ({p['records'] / secs:,.0f}/s) · "
            f"{int(p['tokens']):,} tokens ({p['tokens'] / secs:,.0f}/s) · "
            f"{int(p['rejected']):,} rejected · {int(p['duplicates']):,} duplicates"
        )
        self.show(line=line)


def prepare_table(r: PrepareReport) -> Group:
    """The end-of-run summary of ``ftx prepare``."""
    head = (
        f"[bold]{r.out_dir}[/] "
        + (
            "[green](cache hit: inputs, tokenizer, template and options unchanged)[/]"
            if r.cached
            else f"in {r.seconds:.2f}s, {r.tokens_per_s:,.0f} tokens/s"
        )
        + f"\ntemplate: {r.template}"
        + f"\nread {r.records_read:,} records: {r.accepted:,} kept, {r.rejected:,} rejected, "
        f"{r.duplicates:,} duplicate{'' if r.duplicates == 1 else 's'} dropped"
    )
    splits = Table(title=None, show_edge=False)
    for col in ("split", "records", "tokens", "trained", "mean len", "p95 len", "max len"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for name, s in r.splits.items():
        if s.records == 0:
            continue
        lens = s.lengths or {}
        splits.add_row(
            name,
            f"{s.records:,}",
            f"{s.tokens:,}",
            f"{s.trained_tokens:,}",
            f"{lens.get('mean', 0):.1f}",
            f"{int(lens.get('p95', 0)):,}",
            f"{int(lens.get('max', 0)):,}",
        )
    parts: list[object] = [head, splits]
    if r.rejects:
        rejects = Table(show_edge=False)
        rejects.add_column("reject code")
        rejects.add_column("records", justify="right")
        for code, n in sorted(r.rejects.items(), key=lambda kv: -kv[1]):
            rejects.add_row(code, f"{n:,}")
        parts.append(rejects)
    return Group(*parts)  # type: ignore[arg-type]

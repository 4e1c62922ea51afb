"""``ftx merge``: the shards of ``ftx prepare --shard I/N`` into one artifact."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ftx.cli._common import common_options, guarded, print_json
from ftx.report import out_console

if TYPE_CHECKING:
    from ftx.preparation import PrepareReport


@click.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), required=True, help="Artifact folder."
)
@click.option(
    "--memory-mb",
    type=click.IntRange(min=1),
    help="The most one dedup partition holds in memory, in MiB (default 256): the merge's "
    "memory does not grow with the corpus beyond it.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="Default: FTX_NUM_THREADS or all cores."
)
@click.option("--force", is_flag=True, help="Rebuild even if the artifact is up to date.")
@common_options
def command(
    shards: tuple[Path, ...],
    out: Path,
    memory_mb: int | None,
    threads: int | None,
    force: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """SHARDS of one `ftx prepare --shard I/N` set (all N, any order) into the artifact `ftx
    prepare` writes on one machine for the same inputs and options, byte for byte."""
    from ftx.preparation import merge
    from ftx.report import ProgressDisplay, prepare_table

    show_progress = not quiet and not as_json and sys.stderr.isatty()

    def work() -> PrepareReport:
        with ProgressDisplay(enabled=show_progress) as display:
            return merge(
                list(shards),
                out=out,
                memory_mb=memory_mb,
                threads=threads,
                force=force,
                progress=display.update,
            )

    report: PrepareReport = guarded(debug, work)
    if as_json:
        print_json(report.manifest)
    elif not quiet:
        out_console.print(prepare_table(report))

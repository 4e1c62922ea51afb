"""``ftx report``: a run folder as one self-contained HTML page (and, with ``--png``, its
charts as images). Importing this module imports no plotting library and no MLX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftx.cli._common import common_options, guarded, print_json
from ftx.report import err_console, out_console
from ftx.run_report import RunReport, write_report


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="HTML file to write (default: RUN_DIR/report.html).",
)
@click.option(
    "--eval",
    "evaluation",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of `ftx evaluate`'s results.json (default: RUN_DIR/eval when it is there).",
)
@click.option(
    "--png", is_flag=True, help="Also write each chart as OUT-<chart>.png (needs Chromium)."
)
@common_options
def command(
    run_dir: Path,
    out: Path | None,
    evaluation: Path | None,
    png: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Write the report of a training run: config, data, loss, learning rate, grad norm,
    throughput, memory and the evaluation, in one HTML file that opens with no network.

    Example: ftx report RUN_DIR --png

    `ftx train` writes RUN_DIR/report.html at the end of every run; run this again after
    `ftx evaluate --adapter RUN_DIR` to add the evaluation.
    """

    def work() -> Any:
        return write_report(run_dir, out=out, evaluation=evaluation, png=png)

    report: RunReport = guarded(debug, work)
    if as_json:
        print_json(report.to_dict())
        return
    if not quiet:
        out_console.print(f"report: {report.html} ({len(report.charts)} charts)", highlight=False)
        for image in report.images:
            out_console.print(f"image: {image}", highlight=False)
    for w in report.warnings:
        err_console.print(f"[yellow]warning[/]: {w}", highlight=False, soft_wrap=True)

"""``ftx report``: a run folder of ``ftx train`` as one self-contained HTML file.

The page has the config, the data (split sizes, the length histogram), train and validation
loss, learning rate, gradient norm, throughput and peak memory over the steps with the best
step and an early stop marked, and, when ``ftx evaluate`` wrote one, the evaluation: metrics
and generations, base next to adapted. It opens with no network (plotly.js is inline).

The face reads and checks the run folder (``contents``, no plotting library); ``charts``
(plotly figures) and ``page`` (the document) are imported on the call. No MLX anywhere: a
report can be written where nothing was trained.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftx.errors import ConfigError, FtxError
from ftx.files import write_text_atomic
from ftx.run_folder import REPORT
from ftx.run_report.contents import read_run

INSTALL = "pip install 'ftx[report]'"


@dataclass(frozen=True)
class RunReport:
    """What ``write_report`` wrote. ``warnings`` name what the run folder lacked."""

    html: Path
    charts: list[str]
    images: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "html": str(self.html),
            "charts": self.charts,
            "images": [str(p) for p in self.images],
            "warnings": self.warnings,
        }


def write_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    evaluation: str | Path | None = None,
    png: bool = False,
) -> RunReport:
    """Writes the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``), with the
    evaluation in ``evaluation`` (default ``RUN_DIR/eval`` when it is there). ``png`` also
    writes every chart as ``<out stem>-<chart>.png`` beside it (needs a Chrome or Chromium).

    Raises when ``run_dir`` is not a run with logged steps; what else is missing (the data
    artifact, the config, a final report) is listed in ``warnings`` and on the page.
    """
    run = Path(run_dir)
    contents = read_run(run, None if evaluation is None else Path(evaluation))
    try:
        from ftx.run_report import charts, page

        if png:
            importlib.import_module("kaleido")  # plotly's image exporter
    except ImportError as e:
        raise ConfigError(f"the run report cannot import what it needs ({e}): {INSTALL}") from e
    figs = charts.figures(contents)
    html = Path(out) if out is not None else run / REPORT
    write_text_atomic(html, page.render(contents, figs))
    images = [html.with_name(f"{html.stem}-{name}.png") for name in figs] if png else []
    if images:
        try:
            charts.write_images(figs, images)
        except RuntimeError as e:  # plotly's words for "no Chrome found" and kaleido failures
            raise FtxError(
                f"--png: the charts could not be exported ({e}); kaleido needs a Chrome or "
                "Chromium (Debian: apt-get install chromium)"
            ) from e
    return RunReport(html, list(figs), images, list(contents.notes))


def try_write_report(run_dir: Path) -> tuple[Path | None, list[str]]:
    """``RUN_DIR/report.html`` as a finished run or evaluation writes it: (its path, warnings),
    or (None, why not). Never raises: that work is done and saved, whatever its report does."""
    try:
        r = write_report(run_dir)
    except Exception as e:  # any failure at all: the run itself succeeded
        return None, [f"the run report was not written: {e}"]
    return r.html, r.warnings

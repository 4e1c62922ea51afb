"""The report's charts as plotly figures, one per name in ``CHARTS`` (a chart with nothing to
show is left out).

Plotly, because one library gives both outputs: interactive charts (hover a step, zoom) in a
self-contained HTML page with plotly.js inline, and the same figures as PNG through kaleido,
plotly's exporter, which drives a local Chrome or Chromium (the one the browser test uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from ftx.run_report.contents import RunContents

# name -> (title, y axis title)
CHARTS: dict[str, tuple[str, str]] = {
    "lengths": ("Record lengths", "records"),
    "loss": ("Loss", "loss (nats per trained token)"),
    "learning_rate": ("Learning rate", "learning rate"),
    "grad_norm": ("Gradient norm", "grad norm (before clipping)"),
    "throughput": ("Throughput", "tokens/s"),
    "memory": ("Peak memory", "MiB"),
}
# metrics.jsonl key -> (chart, trace name, scale applied to the value)
SERIES: dict[str, tuple[str, str, float]] = {
    "train_loss": ("loss", "train", 1.0),
    "val_loss": ("loss", "validation", 1.0),
    "learning_rate": ("learning_rate", "learning rate", 1.0),
    "grad_norm": ("grad_norm", "grad norm", 1.0),
    "trained_tokens_per_s": ("throughput", "trained tokens/s", 1.0),
    "processed_tokens_per_s": ("throughput", "processed tokens/s", 1.0),
    "peak_memory": ("memory", "peak memory", 2.0**-20),
}
WIDTH, HEIGHT = 900, 380


def _figure(name: str, x_title: str) -> go.Figure:
    title, y_title = CHARTS[name]
    fig = go.Figure()
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=HEIGHT,
        margin={"l": 70, "r": 30, "t": 60, "b": 50},
        xaxis_title=x_title,
        yaxis_title=y_title,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _markers(c: RunContents) -> list[tuple[int, str, str]]:
    """(step, label, colour) of the lines drawn across every step chart: resumes, the best
    checkpoint (the adapter that was kept) and an early or diverged stop."""
    marks = [(int(e["step"]), "resumed", "grey") for e in c.events if e.get("event") == "resumed"]
    stopped: dict[str, Any] = next(
        (e for e in reversed(c.events) if e.get("event") == "stopped"), {}
    )
    summary = c.summary or {}
    best = summary.get("best_step", stopped.get("best_step"))
    if isinstance(best, int):
        marks.append((best, f"best step {best}", "green"))
    reason = str(summary.get("stop_reason") or stopped.get("reason") or "")
    for prefix in ("early stopping", "diverged"):
        if reason.startswith(prefix) and isinstance(stopped.get("step"), int):
            marks.append((int(stopped["step"]), prefix, "red"))
    return marks


def _step_charts(c: RunContents) -> dict[str, go.Figure]:
    figures: dict[str, go.Figure] = {}
    for key, (name, label, scale) in SERIES.items():
        points = [(r["step"], r[key] * scale) for r in c.steps if r.get(key) is not None]
        if not points:
            continue
        fig = figures.get(name) or _figure(name, "step")
        figures[name] = fig
        steps, values = zip(*points, strict=True)
        fig.add_trace(go.Scatter(x=steps, y=values, name=label, mode="lines+markers"))
    for fig in figures.values():
        for step, label, colour in _markers(c):
            fig.add_vline(
                x=step,
                line={"dash": "dash", "color": colour, "width": 1},
                annotation_text=label,
                annotation_position="top",
            )
    if "learning_rate" in figures:
        figures["learning_rate"].update_yaxes(exponentformat="e")
    return figures


def _lengths_chart(c: RunContents) -> go.Figure | None:
    if not c.splits:
        return None
    fig = _figure("lengths", "tokens per record")
    for s in c.splits:
        fig.add_trace(
            go.Histogram(
                x=s.lengths, name=f"{s.name} ({s.records:,})", opacity=0.7, bingroup="lengths"
            )
        )
    fig.update_layout(barmode="overlay")
    if isinstance(limit := c.config.get("max_seq_length"), int):
        fig.add_vline(
            x=limit,
            line={"dash": "dash", "color": "red", "width": 1},
            annotation_text=f"max_seq_length {limit}",
            annotation_position="top",
        )
    return fig


def figures(c: RunContents) -> dict[str, go.Figure]:
    """The charts there is something to draw for, in ``CHARTS``' order."""
    found: dict[str, Any] = {"lengths": _lengths_chart(c), **_step_charts(c)}
    return {name: found[name] for name in CHARTS if found.get(name) is not None}


def write_images(figs: dict[str, go.Figure], paths: Sequence[Any]) -> None:
    """Every figure as a PNG, in one browser session (kaleido starts one Chromium)."""
    import plotly.io as pio

    pio.write_images(list(figs.values()), list(paths), width=WIDTH, height=HEIGHT)

"""The report as one HTML document: plotly.js inline once, each chart a div plotly writes, and
plain tables for the config, the data and the evaluation. Nothing is loaded from elsewhere."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from ftx import __version__
from ftx.run_report.contents import Evaluation, RunContents

# The evaluation page shows this many generations; examples.jsonl has them all.
SHOWN_EXAMPLES = 50
# Metrics where lower is better; every other evaluation metric is a rate (0 to 1).
LOWER_BETTER = ("loss", "perplexity")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.notes { background: #fff4e5; border-left: 4px solid #f0a030; padding: .5em 1em; }
.better { color: #187a30; } .worse { color: #b3261e; }
pre { white-space: pre-wrap; margin: 0; font-size: .85em; max-height: 14em; overflow: auto; }
.chart { margin: 1em 0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(headers: Sequence[str] | None, rows: Iterable[Sequence[str]], raw: bool = False) -> str:
    """A table of text cells (escaped); ``raw`` cells are HTML already."""
    head = "" if headers is None else "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table>{head}{body}</table>"


def _summary(c: RunContents) -> str:
    m, s = c.manifest, c.summary
    rows = [
        ("run folder", str(c.run_dir)),
        ("started", m.get("started", "?")),
        ("finished", m.get("finished", "not yet")),
        ("model", (m.get("inputs") or {}).get("model", "?")),
        ("data", str(c.data) if c.data else "?"),
    ]
    if s is not None:
        rows += [
            ("method", s.get("method")),
            (
                "parameters",
                f"{_num(s.get('trainable_parameters'))} trainable of "
                f"{_num(s.get('total_parameters'))}",
            ),
            ("steps", f"{_num(s.get('steps'))} ({_num(s.get('epochs'), 2)} epochs)"),
            (
                "loss",
                ", ".join(
                    f"{k} {_num(s.get(f'{k}_loss'))}"
                    for k in ("train", "val", "test")
                    if s.get(f"{k}_loss") is not None
                ),
            ),
            (
                "throughput",
                f"{_num(s.get('trained_tokens_per_s'), 0)} trained tokens/s, "
                f"{_num(s.get('processed_tokens_per_s'), 0)} processed tokens/s",
            ),
            ("peak memory", f"{_num((s.get('peak_memory') or 0) / 2**20, 1)} MiB"),
            ("stopped", s.get("stop_reason") or "?"),
        ]
        if s.get("best_step") is not None:
            rows.append(
                (
                    "kept adapter",
                    f"best validation loss {_num(s.get('best_val_loss'))} at step {s['best_step']}",
                )
            )
    return _table(None, [(k, str(v)) for k, v in rows])


def _config(c: RunContents) -> str:
    if not c.config:
        return "<p>No config.</p>"
    rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in c.config.items()]
    return _table(["key", "value"], rows)


def _data(c: RunContents) -> str:
    if not c.splits:
        return "<p>No data summary.</p>"
    rows = [
        (
            s.name,
            _num(s.records),
            _num(s.tokens),
            _num(s.trained_tokens),
            _num(int(s.lengths.min())),
            _num(float(s.lengths.mean()), 1),
            _num(int(s.lengths.max())),
        )
        for s in c.splits
    ]
    headers = ["split", "records", "tokens", "trained tokens", "shortest", "mean", "longest"]
    return _table(headers, rows)


def _metrics(model: dict[str, Any] | None) -> dict[str, float]:
    """Flat metric -> value of one model's results.json entry: the loss, and the rates."""
    if model is None:
        return {}
    out = {k: v for k, v in (model.get("loss") or {}).items() if k in LOWER_BETTER}
    for k, v in (model.get("generation") or {}).items():
        if isinstance(v, float) and k != "seconds":  # the rates; the counts are ints
            out[k] = v
    return out


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if key in LOWER_BETTER else f"{value:.1%}"


def _evaluation(ev: Evaluation | None) -> str:
    if ev is None:
        return (
            "<p>No evaluation. <code>ftx evaluate --model MODEL --adapter RUN_DIR --data ...</code>"
            " writes one into RUN_DIR/eval; then run <code>ftx report RUN_DIR</code> again.</p>"
        )
    r = ev.results
    base, adapted = _metrics(r.get("base")), _metrics(r.get("adapted"))
    rows = []
    for key in base:
        b, a = base[key], adapted.get(key)
        change = ""
        if a is not None:
            d = a - b
            better = (d < 0) == (key in LOWER_BETTER)
            text = f"{d:+.4f}" if key in LOWER_BETTER else f"{100 * d:+.1f} pts"
            change = (
                text if d == 0 else f'<span class="{"better" if better else "worse"}">{text}</span>'
            )
        rows.append((_e(key.replace("_", " ")), _cell(key, b), _cell(key, a), change))
    parts = [
        f"<p>{_e(ev.folder)}: base {_e(r.get('base_model', '?'))}"
        + (f", sampling {_e(json.dumps(r['sampling']))}" if r.get("sampling") else "")
        + "</p>",
        _table(["metric", "base", "adapted", "adapted - base"], rows, raw=True),
    ]
    if ev.examples:
        shown = ev.examples[:SHOWN_EXAMPLES]
        gen_rows = [
            (
                _e(x.get("line", "")),
                f"<pre>{_e(x.get('prompt', ''))}</pre>",
                f"<pre>{_e(x.get('reference', ''))}</pre>",
                *(
                    f"<pre>{_e((x.get(label) or {}).get('output', '-'))}</pre>"
                    for label in ("base", "adapted")
                ),
            )
            for x in shown
        ]
        more = len(ev.examples) - len(shown)
        parts += [
            "<h3>Generations</h3>",
            _table(["line", "prompt", "reference", "base", "adapted"], gen_rows, raw=True),
            f"<p>{more} more in {_e(ev.folder / 'examples.jsonl')}.</p>" if more > 0 else "",
        ]
    return "".join(parts)


def _chart(name: str, fig: go.Figure) -> str:
    div = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{name}",
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="chart" data-chart="{_e(name)}">{div}</div>'


def render(c: RunContents, figs: dict[str, go.Figure]) -> str:
    charts = {name: _chart(name, fig) for name, fig in figs.items()}

    def section(title: str, *names: str) -> str:
        return f"<h2>{_e(title)}</h2>" + "".join(charts.get(n, "") for n in names)

    notes = (
        '<div class="notes"><b>Missing from this report</b><ul>'
        + "".join(f"<li>{_e(n)}</li>" for n in c.notes)
        + "</ul></div>"
        if c.notes
        else ""
    )
    title = f"ftx run report: {c.run_dir.name}"
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{_e(title)}</title><style>{STYLE}</style>",
            # plotly.js itself, once, so the file opens with no network
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>',
            f"<h1>{_e(title)}</h1><p>written by ftx {_e(__version__)}</p>",
            notes,
            "<h2>Run</h2>",
            _summary(c),
            "<h2>Config</h2>",
            _config(c),
            "<h2>Data</h2>",
            _data(c),
            charts.get("lengths", ""),
            section("Training", "loss", "learning_rate", "grad_norm"),
            section("Throughput and memory", "throughput", "memory"),
            "<h2>Evaluation</h2>",
            _evaluation(c.evaluation),
            "</body></html>",
        ]
    )

"""``ftx inspect``: what a prepared artifact (or raw files, through prepare's pass) holds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ftx.cli._common import common_options, guarded, print_json
from ftx.cli.prepare import setting_options
from ftx.report import out_console

TRAINED = "black on green"
UNTRAINED = "dim"
# A record's text in the terminal: this many characters at each end (--json has it whole).
SHOWN_CHARS = 600
BAR_WIDTH = 40


@click.command("inspect")
@click.argument("source", nargs=-1, required=True)
@click.option(
    "--model", "-m", type=click.Path(path_type=Path), help="Model folder (required for raw files)."
)
@click.option("--tokenizer", type=click.Path(path_type=Path), help="tokenizer.json to use instead.")
@click.option("--chat-template", help="Raw files: template file or shipped template name.")
@setting_options
@click.option("--threads", type=click.IntRange(min=1), help="Raw files: worker threads.")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Records per outlier list and duplicate clusters shown.",
)
@click.option(
    "--lines",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Most repeated lines shown.",
)
@click.option(
    "--bins",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="Bars of the token-length histogram.",
)
@common_options
def command(
    source: tuple[str, ...],
    model: Path | None,
    tokenizer: Path | None,
    chat_template: str | None,
    threads: int | None,
    top: int,
    lines: int,
    bins: int,
    as_json: bool,
    quiet: bool,
    debug: bool,
    **flags: Any,
) -> None:
    """What a dataset holds: counts per split, source file and format, token lengths, trained
    fractions, turns, reject reasons, outliers and duplicate clusters shown with their trained
    text highlighted, and the most repeated lines.

    SOURCE is a prepared artifact folder, or raw files (with --model and any prepare setting),
    run through prepare's pipeline without writing anything.
    """
    from ftx.inspection import inspect
    from ftx.report import ProgressDisplay

    settings: dict[str, Any] = {
        k.removeprefix("no_"): (not v if k.startswith("no_") else v)
        for k, v in flags.items()
        if v is not None
    }
    artifact = len(source) == 1 and Path(source[0]).is_dir()
    if not artifact:
        missing = [s for s in source if not any(c in s for c in "*?[") and not Path(s).exists()]
        if missing:
            raise click.BadParameter(f"{missing[0]}: no such file or folder", param_hint="SOURCE")
        if model is None and tokenizer is None:
            raise click.UsageError("raw files need --model DIR (or --tokenizer FILE)")
    show_progress = not quiet and not as_json and sys.stderr.isatty() and not artifact

    def work() -> Any:
        with ProgressDisplay(enabled=show_progress) as display:
            return inspect(
                source[0] if artifact else list(source),
                model=model,
                tokenizer=tokenizer,
                chat_template=chat_template,
                threads=threads,
                top=top,
                lines=lines,
                bins=bins,
                progress=display.update,
                **settings,
            )

    found = guarded(debug, work)
    if as_json:
        print_json(found.summary)
    elif not quiet:
        show(found.summary, out_console)


def _table(title: str, *columns: str) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", show_edge=False)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    return t


def _bars(title: str, histogram: list[dict[str, Any]], fmt: str) -> Table:
    t = _table(title, "range", "records", "")
    top = max((h["records"] for h in histogram), default=0) or 1
    for h in histogram:
        bar = "█" * round(BAR_WIDTH * h["records"] / top)
        t.add_row(f"{h['start']:{fmt}} to {h['end']:{fmt}}", f"{h['records']:,}", Text(bar, "cyan"))
    return t


def record_text(segments: list[dict[str, Any]], limit: int = SHOWN_CHARS) -> Text:
    """A record's text, trained stretches highlighted; past ``2 * limit`` characters only its
    two ends are shown."""
    text = Text()
    for seg in segments:
        text.append(seg["text"], style=TRAINED if seg["trained"] else UNTRAINED)
    if len(text) > 2 * limit:
        cut = len(text) - 2 * limit
        head, tail = text[:limit], text[-limit:]
        text = Text.assemble(head, Text(f" … {cut:,} characters … ", "bold yellow"), tail)
    return text


def _record(console: Console, r: dict[str, Any], note: str = "") -> None:
    head = (
        f"{r['file']}:{r['line']} · {r['split']}[{r['index']}] · {r['format']} · "
        f"{r['turns']} turns · {r['tokens']:,} tokens, {r['trained_tokens']:,} trained "
        f"({r['trained_fraction']:.0%}){note}"
    )
    console.print(Text(head, style="bold blue"), soft_wrap=True)
    console.print(record_text(r["segments"]), highlight=False, markup=False, soft_wrap=True)


def show(s: dict[str, Any], console: Console) -> None:
    """The terminal report of ``ftx inspect``."""
    where = s["source"].get("path") or ", ".join(s["source"]["inputs"])
    console.print(
        f"[bold]{where}[/] ({s['source']['kind']}) · template: {s['template']}\n"
        f"read {s['records_read']:,} records: {s['records']:,} kept, {s['rejected']:,} "
        f"rejected, {s['duplicates']:,} duplicate(s) dropped · {s['tokens']:,} tokens, "
        f"{s['trained_tokens']:,} trained ({s['trained_fraction']:.1%})",
        highlight=False,
    )
    t = _table("splits", "split", "records", "tokens", "trained")
    for name, v in s["splits"].items():
        t.add_row(name, f"{v['records']:,}", f"{v['tokens']:,}", f"{v['trained_tokens']:,}")
    console.print(t)
    for key, title in (("sources", "source file"), ("formats", "format")):
        t = _table(f"per {title}", title, "records", "tokens", "trained")
        for v in s[key]:
            t.add_row(
                v["name"], f"{v['records']:,}", f"{v['tokens']:,}", f"{v['trained_tokens']:,}"
            )
        console.print(t)
    lens = s["lengths"]
    console.print(
        f"[bold]tokens per record[/]: min {lens['min']:,.0f} · mean {lens['mean']:,.1f} · "
        f"p50 {lens['p50']:,.0f} · p90 {lens['p90']:,.0f} · p99 {lens['p99']:,.0f} · "
        f"max {lens['max']:,.0f}",
        highlight=False,
    )
    console.print(_bars("token lengths", lens["histogram"], ",.0f"))
    frac = s["trained_fractions"]
    console.print(
        f"[bold]trained fraction per record[/]: min {frac['min']:.2f} · mean {frac['mean']:.2f} "
        f"· p50 {frac['p50']:.2f} · max {frac['max']:.2f}",
        highlight=False,
    )
    console.print(_bars("trained fractions", frac["histogram"], ".1f"))
    t = _table("turns per record", "assistant turns", "records")
    for turns, n in s["turns"]["records"].items():
        t.add_row(turns, f"{n:,}")
    console.print(t)
    if s["rejects"] or s["duplicates"]:
        t = _table("reject reasons", "code", "records")
        for code, n in s["rejects"].items():
            t.add_row(code, f"{n:,}")
        if s["duplicates"]:
            t.add_row("duplicate (dropped)", f"{s['duplicates']:,}")
        console.print(t)
    console.print(Text("trained text is shown like this", style=TRAINED))
    for key, title in (
        ("longest", "longest records"),
        ("shortest", "shortest records"),
        ("lowest_trained_fraction", "lowest trained fraction"),
    ):
        console.rule(f"[bold]{title}", style="bold")
        for r in s["outliers"][key]:
            _record(console, r)
    if s["repeated_lines"]:
        t = _table("most repeated lines", "line", "records")
        for v in s["repeated_lines"]:
            line = v["line"] if len(v["line"]) <= 100 else v["line"][:99] + "…"
            t.add_row(Text(line), f"{v['records']:,}")
        console.print(t)
    c = s["duplicate_clusters"]
    console.rule(
        f"[bold]duplicate clusters[/] ({', '.join(c['codes'])}): {c['clusters']:,} record(s) "
        f"kept over {c['records_in_clusters']:,} copies",
        style="bold",
    )
    for cl in c["largest"]:
        members = ", ".join(f"{m['file']}:{m['line']}" for m in cl["members"])
        more = cl["copies"] - len(cl["members"])
        copies = f"{members}{f' and {more:,} more' if more > 0 else ''}"
        if cl["record"] is not None:
            _record(console, cl["record"], f" · kept over {cl['copies']:,}: {copies}")
        else:
            console.print(f"{cl['kept']['file']}:{cl['kept']['line']} kept over {copies}")
    if not c["largest"]:
        console.print("no duplicates found", style="dim")

"""``ftx evaluate``: a model, and the same model with a run's adapters, side by side.

Importing this module does not import MLX; ``ftx.evaluate`` does, after the inputs are checked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ftx.cli._common import common_options, config_file_option, guarded, print_json
from ftx.report import err_console, out_console

# metric key -> (label, is a rate shown in percent, lower is better)
ROWS: dict[str, tuple[str, bool, bool]] = {
    "loss": ("loss", False, True),
    "perplexity": ("perplexity", False, True),
    "exact_match": ("exact match", True, False),
    "contains": ("contains", True, False),
    "tool_json_valid": ("tool call JSON valid", True, False),
    "tool_name_accuracy": ("tool name accuracy", True, False),
    "tool_arguments_accuracy": ("tool arguments accuracy", True, False),
}


def metric_cell(value: float | None, rate: bool, digits: int = 4) -> str:
    """A rate in percent, anything else with ``digits`` decimals; ``-`` when missing."""
    if value is None:
        return "-"
    return f"{value:.1%}" if rate else f"{value:.{digits}f}"


def metric_change(value: float | None, rate: bool, lower_better: bool, digits: int = 4) -> str:
    """Adapted minus base: points for rates, green when it is an improvement, red when not."""
    if value is None:
        return "-"
    text = f"{100 * value:+.1f} pts" if rate else f"{value:+.{digits}f}"
    if value == 0:
        return text
    good = (value < 0) == lower_better
    return f"[{'green' if good else 'red'}]{text}[/]"


def results_view(r: Any) -> Group:
    """The metrics table (base, adapted, delta) and what they were measured on."""
    base, adapted = r.base.metrics(), r.adapted.metrics() if r.adapted else None
    delta = r.delta()
    t = Table(title=f"ftx evaluate: {r.model}", title_justify="left", min_width=60)
    t.add_column("metric")
    t.add_column("base", justify="right")
    if adapted is not None:
        t.add_column("adapted", justify="right")
        t.add_column("delta", justify="right")
    for key, (label, rate, lower_better) in ROWS.items():
        if key not in base:
            continue
        if key in ("loss", "perplexity"):
            label = f"{r.base.loss.split} {label}"
        row = [label, metric_cell(base[key], rate)]
        if adapted is not None:
            row += [
                metric_cell(adapted.get(key), rate),
                metric_change(delta.get(key), rate, lower_better),
            ]
        t.add_row(*row)
    notes = []
    if r.base.loss is not None:
        s = r.base.loss
        notes.append(f"loss over {s.trained_tokens:,} trained tokens of {s.records:,} records")
    if r.base.generation is not None:
        g, s = r.base.generation.rates, r.sampling
        notes.append(
            f"generation on {g.examples} held-out records "
            f"({g.tool_examples} with a tool-call reference); "
            f"temperature {s.temperature}, top_p {s.top_p}, max_tokens {s.max_tokens}, "
            f"seed {s.seed}"
        )
    notes.append(f"base: {r.base_description}; {r.seconds:.1f}s")
    return Group(t, *(Text(n, style="dim") for n in notes))


@click.command("evaluate")
@config_file_option
@click.option(
    "--model",
    required=True,
    type=click.Path(path_type=Path),
    help="Local model folder (config.json, *.safetensors, tokenizer.json).",
)
@click.option(
    "--adapter",
    type=click.Path(path_type=Path),
    help="Run folder of `ftx train` (adapters.safetensors): scored next to the base.",
)
@click.option(
    "--data",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Prepared folder (loss, perplexity) and/or JSONL chat records whose last assistant "
    "message is the reference (generation). Repeat to give both.",
)
@click.option("--split", default="test", show_default=True, help="Split of the prepared data.")
@click.option(
    "--temperature", default=0.0, show_default=True, type=float, help="0 is greedy decoding."
)
@click.option("--top-p", default=1.0, show_default=True, type=float, help="Nucleus sampling.")
@click.option(
    "--max-tokens",
    type=int,
    help="Tokens per answer at most (default: 1.5x the longest reference + 16, at most 512).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampling.")
@click.option("--limit", type=int, help="Only the first N held-out records.")
@click.option(
    "--batch-size", default=8, show_default=True, type=int, help="Records per loss batch."
)
@click.option("--max-seq-length", type=int, help="Cut longer records in the loss (default: none).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for results.json and examples.jsonl (default: ADAPTER/eval; none without).",
)
@common_options
def command(as_json: bool, quiet: bool, debug: bool, **keys: Any) -> None:
    """Loss, perplexity and generation metrics of a model, with and without adapters.

    Example: ftx evaluate --model DIR --adapter RUN_DIR --data PREPARED --data test.jsonl
    """
    from ftx.evaluation import evaluate

    def say(message: str) -> None:
        err_console.print(f"[dim]{message}[/]", highlight=False)

    show = not quiet and not as_json and sys.stderr.isatty()
    keys["data"] = list(keys["data"])
    result = guarded(debug, lambda: evaluate(**keys, progress=say if show else None))
    if as_json:
        print_json(result.to_dict())
    elif not quiet:
        out_console.print(results_view(result))
        if result.out_dir is not None:
            out_console.print(f"results: {result.out_dir}", highlight=False)
        if result.run_report is not None:
            out_console.print(f"report: {result.run_report}", highlight=False)
    if not as_json:
        for w in result.warnings:
            err_console.print(f"[yellow]warning[/]: {w}", highlight=False, soft_wrap=True)

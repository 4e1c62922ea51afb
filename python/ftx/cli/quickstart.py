"""``ftx quickstart``: the main job end to end on the embedded default model.

Importing this module does not import MLX; ``ftx.quickstart`` does, when the training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ftx.cli._common import common_options, guarded, print_json
from ftx.cli.evaluate import metric_cell, metric_change
from ftx.report import err_console, out_console

# Decimals of losses: the quickstart's numbers differ in the first few.
DIGITS = 3
# metric key -> (label, is a rate shown in percent, lower is better)
ROWS: dict[str, tuple[str, bool, bool]] = {
    "exact_match": ("tool-call exact match (name + arguments)", True, False),
    "tool_json_valid": ("tool call JSON valid", True, False),
    "tool_name_accuracy": ("function name accuracy", True, False),
    "tool_arguments_accuracy": ("arguments accuracy", True, False),
    "loss": ("test loss", False, True),
    "perplexity": ("test perplexity", False, True),
}


def table(r: Any) -> Table:
    e = r.evaluation
    base, adapted, delta = e.base.metrics(), e.adapted.metrics(), e.delta()
    gen = e.base.generation.rates
    t = Table(
        title=f"held-out test: {gen.examples} requests in phrasings never seen in training",
        title_justify="left",
    )
    t.add_column("metric")
    t.add_column("base", justify="right")
    t.add_column("adapted", justify="right")
    t.add_column("change", justify="right")
    for key, (label, rate, lower_better) in ROWS.items():
        t.add_row(
            label,
            metric_cell(base.get(key), rate, DIGITS),
            metric_cell(adapted.get(key), rate, DIGITS),
            metric_change(delta.get(key), rate, lower_better, DIGITS),
        )
    return t


def summary(r: Any) -> str:
    s, tr = r.settings, r.train
    stages = ", ".join(f"{st.name} {st.seconds:.1f}s" for st in r.stages)
    return "\n".join(
        [
            f"model: SmolLM2-135M-Instruct ({'converted now' if r.converted else 'cached'}) "
            f"{r.model}",
            f"task: {s.train_records} training requests, {s.test_records} test requests, "
            f"seed {s.seed}, tool calls written {r.style}",
            f"compute: {r.compute}",
            f"training: LoRA rank {s.rank} on the last {s.num_layers} blocks, "
            f"{tr.steps} steps of {s.batch_size} x {s.max_seq_length} token slots, "
            f"learning rate {s.learning_rate:g}; train loss {tr.train_loss:.4f}, "
            f"{tr.processed_tokens_per_s:,.0f} tokens/s",
            f"time: {r.seconds:.1f}s ({stages})",
        ]
    )


def where(r: Any) -> str:
    page = r.evaluation.run_report
    return "\n".join(
        [
            f"run:     {r.run_dir}",
            f"adapter: {r.run_dir / 'adapters.safetensors'}",
            f"report:  {r.results / 'results.json'} (per-example outputs: "
            f"{r.results / 'examples.jsonl'})",
            *([f"page:    {page} (the run report, for a browser)"] if page is not None else []),
            f"summary: {r.out_dir / 'quickstart.json'}",
        ]
    )


@click.command("quickstart")
@click.option(
    "--out",
    "-o",
    default="runs/quickstart",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for the task, prepared data, run and report (replaced by the next quickstart).",
)
@click.option("--seed", type=int, help="Seed of the task data and the training.")
@click.option("--train-records", type=int, help="Training requests generated.")
@click.option("--test-records", type=int, help="Held-out test requests generated.")
@click.option("--iters", type=int, help="Optimizer steps.")
@click.option("--learning-rate", type=float, help="Peak learning rate.")
@click.option("--rank", type=int, help="LoRA rank.")
@click.option("--num-layers", type=int, help="Adapt only the last N transformer blocks.")
@click.option("--force", is_flag=True, help="Write into --out even if another tool wrote there.")
@common_options
def command(
    out: Path, force: bool, as_json: bool, quiet: bool, debug: bool, **overrides: Any
) -> None:
    """The whole loop on the embedded SmolLM2-135M-Instruct, with no network access.

    Converts the model (once, into the user cache), writes ftx's seeded tool-calling task,
    prepares it, trains a LoRA adapter and scores the base and the adapted model on held-out
    test requests whose phrasings training never saw: tool-call exact match, JSON validity,
    function-name and argument accuracy, test loss and perplexity. Sized for a few minutes on
    a 2-core CPU.
    """
    from ftx.quickstart import Settings, quickstart, with_overrides

    def say(message: str) -> None:
        err_console.print(f"[dim]{message}[/]", highlight=False)

    show = not quiet and not as_json
    settings = with_overrides(Settings(), **overrides)
    report = guarded(
        debug,
        lambda: quickstart(out, settings=settings, force=force, progress=say if show else None),
    )
    if as_json:
        print_json(report.to_dict())
        return
    if quiet:
        return
    out_console.print(summary(report), highlight=False)
    out_console.print(table(report))
    out_console.print(where(report), highlight=False)

"""``ftx fuse``: an adapter and its base become one deployable artifact. Importing this module
does not import MLX; ``ftx.export.fusing`` does, later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ftx.cli._common import common_options, config_file_option, guarded, print_json
from ftx.export import (
    DEFAULT_GROUP_SIZE,
    FLOAT_DTYPES,
    FORMATS,
    GROUP_SIZES,
    QUANTIZE_BITS,
    FuseOptions,
    FuseReport,
    fuse,
)
from ftx.report import err_console, out_console

# Layers listed in the summary table (worst first); --json has them all.
SHOWN_LAYERS = 8


def _summary(r: FuseReport) -> Table:
    t = Table(show_header=False, show_edge=False, box=None)
    rows = [
        ("output", f"{r.out} ({r.format}: {', '.join(r.files)})"),
        ("adapter", f"{r.fine_tune_type}, {r.fused_layers} layers"),
        ("base", r.base_quantization),
        ("written", f"{r.output_quantization}, floats in {r.dtype}"),
    ]
    worst = sorted(r.layer_errors, key=lambda e: -e.relative_error)[:SHOWN_LAYERS]
    if worst:
        rows.append(
            (
                "weight error",
                f"{len(r.layer_errors)} layers quantized, max {r.max_relative_error:.2%} "
                "relative (|Q(W)-W|/|W|)",
            )
        )
        for e in worst:
            delta = (
                f", {e.delta_relative_error:.2f}x the adapter's change"
                if e.delta_relative_error is not None
                else ""
            )
            rows.append(("", f"{e.name}: {e.relative_error:.2%}{delta}"))
    if r.float_loss is not None:
        line = f"float fused {r.float_loss.perplexity:.4f} ({r.float_loss.tokens:,} tokens)"
        if r.quantized_loss is not None and r.perplexity_change is not None:
            line += f", quantized {r.quantized_loss.perplexity:.4f} ({r.perplexity_change:+.2%})"
        rows.append(("test perplexity", line))
    rows.append(("time", f"{r.seconds:.1f}s"))
    for k, v in rows:
        t.add_row(f"[bold]{k}[/]", v)
    return t


@click.command("fuse")
@config_file_option
@click.option(
    "--model",
    "-m",
    required=True,
    type=click.Path(path_type=Path),
    help="Base model folder (mlx-lm layout) the adapter was trained on.",
)
@click.option(
    "--adapter",
    "-a",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder of `ftx train` (adapters.safetensors + adapter_config.json).",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="New or empty folder to write (--force replaces an existing one).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="mlx",
    show_default=True,
    help="mlx: fused mlx-lm model; gguf: one llama.cpp file; peft: PEFT adapter.",
)
@click.option(
    "--dequantize",
    is_flag=True,
    help="Float weights (the default for a quantized base too; stated for scripts).",
)
@click.option(
    "--quantize",
    type=click.Choice([str(b) for b in QUANTIZE_BITS]),
    help="Quantize after merging (bits); GGUF: 8 means Q8_0. The error is reported.",
)
@click.option(
    "--group-size",
    type=click.Choice([str(g) for g in GROUP_SIZES]),
    help=f"Group size of --quantize (MLX format; default {DEFAULT_GROUP_SIZE}).",
)
@click.option(
    "--dtype",
    type=click.Choice(FLOAT_DTYPES),
    help="Float type of the written weights (default: the base's).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Prepared artifact: report the perplexity change on its test split.",
)
@click.option("--split", default="test", show_default=True, help="Split of --data to evaluate.")
@click.option(
    "--max-length",
    type=int,
    default=2048,
    show_default=True,
    help="Records of --data are cut at this many tokens.",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists and is not empty.")
@common_options
def command(
    model: Path,
    adapter: Path,
    out: Path,
    fmt: str,
    dequantize: bool,
    quantize: str | None,
    group_size: str | None,
    dtype: str | None,
    data: Path | None,
    split: str,
    max_length: int,
    force: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Merge a LoRA/DoRA adapter into its base and write a deployable model or adapter.

    Example: ftx fuse --model DIR --adapter RUN_DIR --out FUSED_DIR

    The fused model of a quantized base is written in float, without loss (a LoRA's change is
    mostly below one quantization step); --quantize re-quantizes it, reporting every layer's
    error and, with --data, the change in test perplexity. The folder gets ftx_fuse.json
    (where it came from, the options and the error report). Load the MLX result with
    mlx_lm.load(FUSED_DIR), or serve it with mlx_lm.server --model FUSED_DIR.
    """
    options = FuseOptions(
        format=fmt,
        dequantize=dequantize,
        quantize=int(quantize) if quantize is not None else None,
        group_size=int(group_size) if group_size is not None else None,
        dtype=dtype,
        data=data,
        split=split,
        max_length=max_length,
        force=force,
    )

    def work() -> Any:
        return fuse(model, adapter, out, options)

    report: FuseReport = guarded(debug, work)
    if as_json:
        print_json(report.to_dict())
    elif not quiet:
        out_console.print(_summary(report))
    if not as_json:
        for w in report.warnings:
            err_console.print(f"[yellow]warning[/]: {w}", highlight=False, soft_wrap=True)

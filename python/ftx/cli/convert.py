"""``ftx convert``: a GGUF file in, an mlx-lm model folder out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ftx.cli._common import common_options, guarded, print_json
from ftx.report import err_console, out_console


@click.command("convert")
@click.argument("gguf", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="Model folder.")
@click.option(
    "--dequantize", is_flag=True, help="Write float weights instead of Q4_0/Q4_1/Q8_0 blocks."
)
@click.option(
    "--dtype",
    type=click.Choice(["float16", "bfloat16", "float32"]),
    help="Type of float weights and quantization scales. Default: float32 when MLX runs on "
    "the CPU (half precision is slow there), else the GGUF file's own precision.",
)
@click.option("--force", is_flag=True, help="Replace the model folder if it exists.")
@common_options
def command(
    gguf: Path,
    out: Path,
    dequantize: bool,
    dtype: str | None,
    force: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """A GGUF model (llama, qwen2, qwen3, gemma2, gemma3, phi3) in, an mlx-lm model folder out.

    The folder loads with mlx_lm.load and works as `ftx prepare --model`. Q4_0, Q4_1 and Q8_0
    tensors stay quantized, without loss; K-quants (Q4_K_M...) and Q5_0/Q5_1 are dequantized.
    The tokenizer is rebuilt from the GGUF vocabulary to tokenize as llama.cpp does. Needs MLX.
    """
    from ftx.gguf import convert

    def work() -> Any:
        if quiet or as_json or not sys.stderr.isatty():
            return convert(gguf, out, dequantize=dequantize, dtype=dtype, force=force)
        with err_console.status(f"converting {gguf.name}"):
            return convert(gguf, out, dequantize=dequantize, dtype=dtype, force=force)

    report = guarded(debug, work)
    if as_json:
        print_json({**report.manifest, "out_dir": str(report.out_dir), "seconds": report.seconds})
    elif not quiet:
        kinds = ", ".join(f"{n} {kind}" for kind, n in report.tensors.items())
        out_console.print(
            f"[bold]{report.out_dir}[/] in {report.seconds:.2f}s: {report.architecture}, "
            f"{report.parameters / 1e6:,.1f}M parameters, {report.bytes_written / 1e6:,.1f} MB\n"
            f"tensors: {kinds}\n"
            f"tokenizer: {report.tokenizer}, {report.vocab_size:,} tokens",
            highlight=False,
        )

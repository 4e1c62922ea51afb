"""The ``ftx`` command. Each verb lives in its own module and is imported only when it runs, so
``ftx --help`` stays fast and never imports MLX."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# verb -> (module, one-line help). The help is duplicated here on purpose: listing the verbs
# must not import them.
VERBS: dict[str, tuple[str, str]] = {
    "chat": ("ftx.cli.chat", "Talk to a model (base, + adapter, or fused) in the terminal."),
    "convert": ("ftx.cli.convert", "A GGUF model in, an mlx-lm model folder out."),
    "doctor": ("ftx.cli.doctor", "What ftx computes on here (device, BLAS, memory) and fixes."),
    "inspect": ("ftx.cli.inspect", "What a dataset holds: counts, lengths, outliers, duplicates."),
    "prepare": ("ftx.cli.prepare", "Raw chat data in, training-ready token arrays out."),
    "merge": ("ftx.cli.merge", "The shards of `prepare --shard I/N` into one artifact."),
    "fuse": ("ftx.cli.fuse", "Merge an adapter into its base: MLX, GGUF or PEFT output."),
    "train": ("ftx.cli.train", "LoRA, DoRA or full fine-tuning of a local model on MLX."),
    "generate": ("ftx.cli.generate", "A model's answers to a prompt or a JSONL file of them."),
    "evaluate": ("ftx.cli.evaluate", "Loss and generation metrics, base vs adapted, side by side."),
    "quickstart": ("ftx.cli.quickstart", "The whole loop on the embedded model: train, prove it."),
    "report": ("ftx.cli.report", "A run folder as one HTML page: data, curves, evaluation."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in VERBS:
            return None
        module = importlib.import_module(VERBS[cmd_name][0])
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, VERBS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ftx", prog_name="ftx")
def cli() -> None:
    """ftx: chat data to token arrays at the speed of the tokenizer, and LoRA fine-tuning on MLX.

    Threads: FTX_NUM_THREADS (default: all cores) sets the size of the Rust worker pool.
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``ftx`` console script."""
    return cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="ftx")

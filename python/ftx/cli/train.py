"""``ftx train``: fine-tune a local model on a prepared artifact.

Every key of the YAML config is also a flag (``learning_rate`` -> ``--learning-rate``); the
options are generated from ``ftx.config.TrainConfig`` so the two can never drift apart. Flags
override the file. Importing this module does not import MLX; ``ftx.train`` does, later.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TextIO, Union, get_args, get_origin

import click
from pydantic.fields import FieldInfo
from rich.markup import escape
from rich.table import Table

from ftx.cli._common import common_options, guarded, print_json
from ftx.config import TrainConfig, load_config, profiles
from ftx.errors import TrackerWarning, TrainingInterrupted
from ftx.report import err_console, out_console

# The shell's convention for a run stopped by SIGINT.
EXIT_INTERRUPTED = 130

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _comma_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _option(name: str, field: FieldInfo) -> Decorator:
    """A click option for one config key. Values are checked by the config model, not by
    click, so that a flag and a YAML key fail with the same message."""
    flag = "--" + name.replace("_", "-")
    ann = field.annotation
    help_text = field.description or ""
    if get_origin(ann) in (Union, types.UnionType):
        members = [a for a in get_args(ann) if a is not type(None)]
        if len(members) > 1:  # a count or a word ("auto"): the config model tells them apart
            shown = "|".join(_shown(a) for a in members)
            return click.option(flag, name, type=str, metavar=f"[{shown}]", help=help_text)
        ann = members[0]
    if ann is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    if get_origin(ann) is list:
        return click.option(flag, name, callback=_comma_list, help=help_text + " Comma-separated.")
    if get_origin(ann) is Literal:
        choices = get_args(ann)
        kind: Any = int if all(isinstance(c, int) for c in choices) else str
        shown = "|".join(str(c) for c in choices)
        return click.option(flag, name, type=kind, metavar=f"[{shown}]", help=help_text)
    kinds: dict[Any, Any] = {int: int, float: float, Path: click.Path(path_type=Path)}
    kind = kinds.get(ann, str)
    return click.option(flag, name, type=kind, help=help_text)


def _shown(ann: Any) -> str:
    if get_origin(ann) is Literal:
        return "|".join(str(c) for c in get_args(ann))
    if ann is bool:
        return "true|false"
    return "N" if get_args(ann)[:1] == (int,) or ann is int else str(ann)


def config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for name, field in reversed(TrainConfig.model_fields.items()):
        f = _option(name, field)(f)
    return f


def _bytes(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:,.1f} MiB"


def _plan(event: dict[str, Any]) -> str:
    """The memory plan, printed before any weight is read."""
    m = event["memory"]
    from ftx.training.fit import recomputed  # MLX is loaded by now: the run has started

    how = [recomputed(m) or "no checkpointing"]
    how.append(
        f"loss in chunks of {m['loss_chunk']:,} positions"
        if m["loss_chunk"]
        else "loss in one piece"
    )
    line = f"memory plan: {_estimate(m)}; {', '.join(how)}"
    if event["changes"]:
        shown = ", ".join(f"{k} {str(v).lower()}" for k, v in event["changes"].items())
        line += f"\nfit auto changed: {shown}"
    return line


def _estimate(m: dict[str, Any]) -> str:
    return (
        f"{_bytes(m['total'])} (weights {_bytes(m['weights'])}, adapters {_bytes(m['adapters'])}, "
        f"gradients {_bytes(m['gradients'])}, optimizer {_bytes(m['optimizer'])}, "
        f"activations {_bytes(m['activations'])}); available {_bytes(m['available'])}: "
        + ("fits" if m["fits"] else "does NOT fit" if m["fits"] is not None else "unknown")
    )


def _summary(r: Any) -> Table:
    t = Table(show_header=False, show_edge=False, box=None)
    rows: list[tuple[str, str]] = [
        ("run folder", str(r.run_dir)),
        ("method", r.method),
        ("base", r.base),
        ("blas", r.blas),
        ("streams", r.streams),
        ("parameters", f"{r.total_parameters:,} total, {r.trainable_parameters:,} trainable"),
    ]
    rows.append(("memory estimate", _estimate(r.memory.to_dict())))
    if not r.dry_run:
        losses = ", ".join(
            f"{k} {v:.4f}"
            for k, v in (("train", r.train_loss), ("val", r.val_loss), ("test", r.test_loss))
            if v is not None
        )
        rows += [
            ("steps", f"{r.steps:,} ({r.epochs:.2f} epochs); {r.seconds:.1f}s in training steps"),
            ("loss", losses),
            (
                "throughput",
                f"{r.trained_tokens_per_s:,.0f} trained tokens/s, "
                f"{r.processed_tokens_per_s:,.0f} processed tokens/s",
            ),
            ("packing efficiency", f"{r.packing_efficiency:.1%} of computed tokens are real"),
            ("peak memory", _bytes(r.peak_memory)),
            ("stopped", r.stop_reason or "?"),
            ("ranks", f"{r.ranks} (data parallel)" if r.ranks > 1 else "1"),
        ]
        if r.best_step is not None:
            rows.append(
                ("final adapter", f"best validation: step {r.best_step}, {r.best_val_loss:.4f}")
            )
        if r.resumed_from is not None:
            rows.append(("resumed", f"from the checkpoint of step {r.resumed_from}"))
        if r.skipped_steps:
            rows.append(("skipped steps", f"{r.skipped_steps} (non-finite loss or gradient)"))
        if r.run_report is not None:
            rows.append(("report", str(r.run_report)))
    for k, v in rows:
        t.add_row(f"[bold]{k}[/]", v)
    return t


@contextmanager
def _tracker_warnings_as_lines() -> Iterator[None]:
    """A failed tracker as one line, like the run's other warnings; the rest as Python shows it."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if issubclass(category, TrackerWarning):
                text = escape(str(message))
                err_console.print(f"[yellow]warning[/]: {text}", highlight=False, soft_wrap=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


@click.command("train")
@click.option(
    "--config",
    "-c",
    "config_file",
    type=click.Path(path_type=Path),
    help="YAML file of these same keys (snake_case); flags override it.",
)
@click.option("--extends", help=f"Profile ({', '.join(profiles())}) or YAML file to start from.")
@config_options
@click.option("--dry-run", is_flag=True, help="Parameters and a memory estimate; no training.")
@click.option(
    "--resume/--no-resume",
    default=None,
    help="Continue from the run folder's newest checkpoint (default: if there is one).",
)
@common_options
def command(
    config_file: Path | None,
    extends: str | None,
    dry_run: bool,
    resume: bool | None,
    as_json: bool,
    quiet: bool,
    debug: bool,
    **keys: Any,
) -> None:
    """LoRA, DoRA or full fine-tuning of a local model on a prepared artifact, on MLX.

    Example: ftx train --model DIR --data PREPARED --out RUN_DIR --extends chat --iters 200

    The run folder gets adapters.safetensors + adapter_config.json (load them with
    mlx_lm.load(model, adapter_path=RUN_DIR)), metrics.jsonl, config.yaml and manifest.json.
    """
    from ftx.training import train

    show_progress = not quiet and not as_json and sys.stderr.isatty()

    def warn(record: dict[str, Any]) -> None:
        if record.get("event") == "plan" and not quiet and not as_json:
            err_console.print(_plan(record), highlight=False, soft_wrap=True)
        if record.get("event") == "over_plan":
            err_console.print(
                f"[yellow]warning[/]: step {record['step']}: peak memory "
                f"{_bytes(record['peak'])} is past the plan's {_bytes(record['planned'])}; "
                f"MLX's memory limit raised to {_bytes(record['limit'])} so the run keeps its "
                "speed (the plan under-counts this run)",
                soft_wrap=True,
            )
        if record.get("event") == "skipped_step":
            err_console.print(
                f"[yellow]warning[/]: step {record['step']} skipped: loss {record['loss']}, "
                f"grad norm {record['grad_norm']}",
                soft_wrap=True,
            )

    def work() -> Any:
        cfg = load_config(config_file, {**keys, "extends": extends})
        with _tracker_warnings_as_lines():
            try:
                return train(
                    cfg, dry_run=dry_run, progress=show_progress, callbacks=[warn], resume=resume
                )
            except TrainingInterrupted as e:
                err_console.print(f"[yellow]{e}[/]", highlight=False, soft_wrap=True)
                sys.exit(EXIT_INTERRUPTED)

    report = guarded(debug, work)
    if report.rank != 0:  # data parallel: rank 0 speaks for the run
        return
    if as_json:
        print_json(report.to_dict())
    elif not quiet:
        out_console.print(_summary(report))
    if not as_json:
        for w in report.warnings:
            err_console.print(f"[yellow]warning[/]: {w}", highlight=False, soft_wrap=True)
    if report.truncated_records and not as_json:
        err_console.print(
            f"{report.truncated_records} records are longer than max_seq_length and were cut"
        )

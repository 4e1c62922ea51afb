"""``ftx prepare``: raw chat data in, training-ready token arrays out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ftx import _core
from ftx.cli._common import EXIT_FAILED, common_options, guarded, print_json
from ftx.report import err_console, out_console


@click.command("prepare")
@click.argument("inputs", nargs=-1)
@click.option("--model", "-m", type=click.Path(path_type=Path), help="Local model folder.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Artifact folder (required).")
@click.option("--tokenizer", type=click.Path(path_type=Path), help="tokenizer.json to use instead.")
@click.option("--chat-template", help="Template file, or a shipped template name (chatml, ...).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_core.format_names()),
    help="Force one input format (default: detected per record).",
)
@click.option("--columns", help="Map other column names, e.g. instruction=question,output=answer.")
@click.option("--text-unit", type=click.Choice(["line", "file"]), default="line", show_default=True)
@click.option("--no-dedup", is_flag=True, help="Keep exact duplicates.")
@click.option("--valid", default="0", show_default=True, help="Ratio (0.05) or count (500).")
@click.option("--test", default="0", show_default=True, help="Ratio (0.05) or count (500).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-length", type=click.IntRange(min=1), help="Token limit per record.")
@click.option(
    "--length-policy",
    type=click.Choice(["drop", "truncate", "error"]),
    default="drop",
    show_default=True,
)
@click.option(
    "--train-on",
    type=click.Choice(["assistant", "last", "all"]),
    default="assistant",
    show_default=True,
    help="Which tokens carry loss.",
)
@click.option("--max-reject-ratio", type=click.FloatRange(0, 1), help="Fail above this ratio.")
@click.option(
    "--threads", type=click.IntRange(min=1), help="Default: FTX_NUM_THREADS or all cores."
)
@click.option("--force", is_flag=True, help="Rebuild even if the artifact is up to date.")
@click.option(
    "--check-template",
    is_flag=True,
    help="Self-test the chat template on synthetic conversations, show what is trained, exit.",
)
@common_options
def command(
    inputs: tuple[str, ...],
    model: Path | None,
    out: Path,
    tokenizer: Path | None,
    chat_template: str | None,
    fmt: str | None,
    columns: str | None,
    text_unit: str,
    no_dedup: bool,
    valid: str,
    test: str,
    seed: int,
    max_length: int | None,
    length_policy: str,
    train_on: str,
    max_reject_ratio: float | None,
    threads: int | None,
    force: bool,
    check_template: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Raw chat data in, training-ready token arrays out.

    INPUTS are JSONL/JSON/Parquet/CSV/TXT files (gzip or zstd too) or globs. Formats (OpenAI
    messages, ShareGPT, Alpaca, prompt/completion, text) are detected per record.
    """
    from ftx.preparation import prepare
    from ftx.report import ProgressDisplay, prepare_table

    if model is None and tokenizer is None:
        raise click.UsageError("give --model DIR (or --tokenizer FILE)")
    if check_template:
        _check_template(model, tokenizer, chat_template, train_on, as_json, debug)
        return
    if not inputs or out is None:
        raise click.UsageError("give INPUTS and --out DIR (or --check-template)")
    show_progress = not quiet and not as_json and sys.stderr.isatty()

    def work() -> Any:
        with ProgressDisplay(enabled=show_progress) as display:
            return prepare(
                list(inputs),
                out=out,
                model=model,
                tokenizer=tokenizer,
                chat_template=chat_template,
                format=fmt,
                columns=columns,
                text_unit="file" if text_unit == "file" else "line",
                dedup=not no_dedup,
                valid=valid,
                test=test,
                seed=seed,
                max_length=max_length,
                length_policy=length_policy,  # type: ignore[arg-type]
                train_on=train_on,  # type: ignore[arg-type]
                max_reject_ratio=max_reject_ratio,
                threads=threads,
                force=force,
                progress=display.update,
            )

    report = guarded(debug, work)
    if as_json:
        print_json(report.manifest)
    elif not quiet:
        out_console.print(prepare_table(report))
    if report.rejected and not as_json:
        err_console.print(
            f"{report.rejected} rejected records with reasons: {report.out_dir / 'rejects.jsonl'}"
        )


def _check_template(
    model: Path | None,
    tokenizer: Path | None,
    chat_template: str | None,
    train_on: str,
    as_json: bool,
    debug: bool,
) -> None:
    from dataclasses import asdict

    from rich.text import Text

    from ftx.template_check import check_template

    label, results = guarded(
        debug,
        lambda: check_template(
            model=model, tokenizer=tokenizer, chat_template=chat_template, train_on=train_on
        ),
    )
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        print_json({"template": label, "results": [asdict(r) for r in results]})
    else:
        out_console.print(f"chat template: {label}", highlight=False)
        out_console.print(Text("trained text is shown like this", style="black on green"))
        for r in results:
            if r.status == "ok":
                head = f"{r.name}: {r.trained_tokens} of {r.tokens} tokens trained"
                out_console.rule(head, style="green")
                body = Text()
                for seg in r.segments:
                    body.append(seg.text, style="black on green" if seg.trained else "")
                out_console.print(body, highlight=False, markup=False, soft_wrap=True)
            else:
                color = "red" if r.status == "failed" else "yellow"
                out_console.rule(f"{r.name}: {r.status}", style=color)
                out_console.print(r.reason, highlight=False, markup=False)
        # Only what really rendered and masked counts; the rest is named by what happened.
        counts = {s: sum(r.status == s for r in results) for s in ("ok", "refused", "unsupported")}
        others = ", ".join(f"{n} {s}" for s, n in counts.items() if s != "ok" and n)
        out_console.print(
            f"{counts['ok']} of {len(results)} synthetic conversations rendered and masked"
            + (f"; {others}" if others else "")
            + (f"; {len(failed)} failed" if failed else "")
        )
    if failed or not any(r.status == "ok" for r in results):
        names = ", ".join(r.name for r in failed) or "the template rendered none of them"
        err_console.print(f"[bold red]error[/]: cannot mask: {names}", highlight=False)
        sys.exit(EXIT_FAILED)

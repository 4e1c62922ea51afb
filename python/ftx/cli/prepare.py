"""``ftx prepare``: raw chat data in, training-ready token arrays out."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ftx import _core
from ftx.cli._common import EXIT_FAILED, common_options, guarded, print_json
from ftx.report import err_console, out_console


def _setting_option(s: _core.Setting) -> Callable[[F], F]:
    """The flag of one setting of ``_core.prepare_settings()``. Not given is ``None``, so a
    ``--config`` file's value stands; values are checked by the engine, with the file's."""
    default = s.default
    flag = "--" + s.name.replace("_", "-")
    if s.kind == "flag":
        if default:
            text = f"Turn off {s.help[0].lower()}{s.help[1:]}"
            return click.option(
                f"--no-{flag[2:]}", f"no_{s.name}", is_flag=True, default=None, help=text
            )
        return click.option(flag, s.name, is_flag=True, default=None, help=s.help)
    if s.kind == "paths":
        # Repeated flag; none given is None (click's empty tuple), like every other setting.
        return click.option(
            flag,
            s.name,
            type=click.Path(),
            multiple=True,
            default=None,
            callback=lambda _ctx, _param, v: list(v) or None,
            help=s.help,
        )
    types: dict[str, Any] = {"int": click.INT, "ratio": click.FLOAT}
    kind = click.Choice(s.choices) if s.choices else types.get(s.kind, click.STRING)
    shown = "" if default is None else f"  [default: {default}]"
    return click.option(flag, s.name, type=kind, default=None, help=s.help + shown)


F = TypeVar("F", bound=Callable[..., Any])


def setting_options(f: F) -> F:
    """A flag per setting, in the engine's order."""
    for s in reversed(_core.prepare_settings()):
        f = _setting_option(s)(f)
    return f


# Keys of a --config file besides the settings: where the data comes from and goes, how it runs.
RUN_KEYS = ("inputs", "model", "out", "tokenizer", "chat_template", "threads")


def _from_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A --config file's run keys and its settings as given (the engine checks them)."""
    from ftx.config import read_yaml

    data = read_yaml(path)
    run = {k: data.pop(k) for k in RUN_KEYS if k in data}
    if isinstance(run.get("inputs"), str):
        run["inputs"] = [run["inputs"]]
    for key in ("model", "out", "tokenizer"):
        if key in run:  # relative to the working directory, as train's paths are
            run[key] = Path(str(run[key]))
    return run, data


@click.command("prepare")
@click.argument("inputs", nargs=-1)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML file of settings and run keys (inputs, model, out, ...); flags override it.",
)
@click.option("--model", "-m", type=click.Path(path_type=Path), help="Local model folder.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Artifact folder (required).")
@click.option("--tokenizer", type=click.Path(path_type=Path), help="tokenizer.json to use instead.")
@click.option("--chat-template", help="Template file, or a shipped template name (chatml, ...).")
@setting_options
@click.option(
    "--threads", type=click.IntRange(min=1), help="Default: FTX_NUM_THREADS or all cores."
)
@click.option("--force", is_flag=True, help="Rebuild even if the artifact is up to date.")
@click.option(
    "--shard",
    metavar="I/N",
    help="Process only share I of N (0-based) of the inputs into --out as a shard; "
    "`ftx merge` of all N writes the artifact this command writes without --shard.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Run on a Ray cluster (pip install 'ftx[ray]'): shards on every node, merged here into "
    "the same artifact. ADDRESS is ray.init's (auto, ray://HOST:10001); none: RAY_ADDRESS, "
    "else Ray on this machine.",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    help="With --ray: how many shards (default: twice the nodes).",
)
@click.option(
    "--shard-dir",
    type=click.Path(path_type=Path),
    help="With --ray: where the shards go, a folder every node sees (default: OUT.shards).",
)
@click.option("--keep-shards", is_flag=True, help="With --ray: keep the shards after the merge.")
@click.option(
    "--check-template",
    is_flag=True,
    help="Self-test the chat template on synthetic conversations, show what is trained, exit.",
)
@common_options
def command(
    inputs: tuple[str, ...],
    config_file: Path | None,
    model: Path | None,
    out: Path | None,
    tokenizer: Path | None,
    chat_template: str | None,
    threads: int | None,
    force: bool,
    shard: str | None,
    ray_address: str | None,
    shards: int | None,
    shard_dir: Path | None,
    keep_shards: bool,
    check_template: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
    **flags: Any,
) -> None:
    """Raw chat data in, training-ready token arrays out.

    INPUTS are JSONL/JSON/Parquet/CSV/TXT files (gzip or zstd too) or globs. Formats (OpenAI
    messages, ShareGPT, Alpaca, prompt/completion, text) are detected per record. Every setting
    is also a key of a --config file (max_length: 2048).
    """
    from ftx.preparation import check_settings, parse_shard, prepare, prepare_shard
    from ftx.report import ProgressDisplay, prepare_table

    run, settings = guarded(debug, lambda: _from_file(config_file)) if config_file else ({}, {})
    for key, value in flags.items():
        if value is not None:  # given on the command line: it wins over the file
            negated = key.startswith("no_")
            settings[key.removeprefix("no_")] = not value if negated else value
    given: dict[str, Any] = {
        "model": model,
        "out": out,
        "tokenizer": tokenizer,
        "chat_template": chat_template,
    }
    given |= {"threads": threads, "inputs": list(inputs) or None}
    run |= {k: v for k, v in given.items() if v is not None}
    source = str(config_file) if config_file else "command line"
    guarded(debug, lambda: check_settings(settings, source))
    if run.get("model") is None and run.get("tokenizer") is None:
        raise click.UsageError("give --model DIR (or --tokenizer FILE)")
    if check_template:
        train_on = str(settings.get("train_on", "assistant"))
        _check_template(
            run.get("model"),
            run.get("tokenizer"),
            run.get("chat_template"),
            train_on,
            as_json,
            debug,
        )
        return
    if not run.get("inputs") or run.get("out") is None:
        raise click.UsageError("give INPUTS and --out DIR (or --check-template)")
    show_progress = not quiet and not as_json and sys.stderr.isatty()

    def say(line: str) -> None:  # what prepare did to the model folder (a converted tokenizer)
        if not quiet:
            err_console.print(line, highlight=False)

    if ray_address is None and (shards is not None or shard_dir is not None or keep_shards):
        raise click.UsageError("--shards, --shard-dir and --keep-shards go with --ray")
    if ray_address is not None and shard is not None:
        raise click.UsageError("--ray runs every shard itself: give --ray or --shard, not both")
    inputs_given = [str(p) for p in run["inputs"]]
    # What every way of running takes alike.
    common: dict[str, Any] = {
        "out": run["out"],
        "model": run.get("model"),
        "tokenizer": run.get("tokenizer"),
        "chat_template": run.get("chat_template"),
        "force": force,
        **settings,
    }

    if shard is not None:
        spec = guarded(debug, lambda: parse_shard(shard))

        def work_shard() -> Any:
            with ProgressDisplay(enabled=show_progress) as display:
                return prepare_shard(
                    inputs_given,
                    shard=spec,
                    threads=run.get("threads"),
                    progress=display.update,
                    say=say,
                    **common,
                )

        done = guarded(debug, work_shard)
        if as_json:
            print_json(done.manifest)
        elif not quiet:
            out_console.print(
                f"shard {done.shard}/{done.shards}: {done.rows} records read, {done.accepted} "
                f"accepted ({done.tokens} tokens), {done.rejected} rejected, in {done.out_dir}; "
                f"`ftx merge` all {done.shards} shards for the artifact",
                highlight=False,
            )
        return

    def work() -> Any:
        with ProgressDisplay(enabled=show_progress) as display:
            if ray_address is not None:
                from ftx.distributed import prepare_on_ray

                return prepare_on_ray(
                    inputs_given,
                    address=ray_address or None,
                    shards=shards,
                    shard_dir=shard_dir,
                    keep_shards=keep_shards,
                    progress=display.update,
                    **common,
                )
            return prepare(
                inputs_given,
                threads=run.get("threads"),
                progress=display.update,
                say=say,
                **common,
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

    from ftx.preparation.template_check import check_template

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

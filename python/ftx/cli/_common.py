"""What every verb shares: options every verb takes, error handling, exit codes, output streams."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from ftx.errors import ConfigError, FtxError
from ftx.report import err_console

EXIT_FAILED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def common_options(f: F) -> F:
    """``--json``, ``--quiet`` and ``--debug``, which every verb takes."""
    f = click.option("--debug", is_flag=True, help="Show the Python traceback of errors.")(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No progress display.")(f)
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else."
    )(f)
    return f


def guarded(debug: bool, work: Callable[[], Any]) -> Any:
    """Runs ``work``; expected errors become one clear line on stderr and an exit code."""
    try:
        return work()
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: nothing was written")
        sys.exit(130)
    except FtxError as e:
        if debug:
            raise
        code = EXIT_USAGE if isinstance(e, ConfigError | FileNotFoundError) else EXIT_FAILED
        # Escaped: messages hold brackets (pip install 'ftx[wandb]') that rich would take as markup.
        err_console.print(f"[bold red]error[/]: {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def config_file_option(f: F) -> F:
    """``--config FILE``: a YAML mapping of the command's own options by name (``top_p: 0.9``),
    checked as train's file is (every problem at once: key, value, what is allowed) and laid
    under the flags, which override it. The command's options are the one description."""

    def load(ctx: click.Context, _param: click.Parameter, path: Path | None) -> None:
        if path is None:
            return
        import difflib

        from ftx.config import read_yaml
        from ftx.errors import ConfigIssues, Issue

        options = {
            p.name: p
            for p in ctx.command.params
            if isinstance(p, click.Option) and p.name and p.expose_value
        }
        options.pop("as_json", None)
        values: dict[str, Any] = {}
        issues: list[Issue] = []
        try:
            data = read_yaml(path)
        except ConfigError as e:
            err_console.print(f"[bold red]error[/]: {e}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_USAGE)
        for key, value in data.items():
            option = options.get(str(key))
            if option is None:
                near = difflib.get_close_matches(str(key), list(options), n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                issues.append(
                    Issue(str(key), value, f"unknown key; {hint}known keys: " + ", ".join(options))
                )
                continue
            if isinstance(option.type, click.Choice) and isinstance(value, int | float):
                value = str(value)  # YAML's `quantize: 4` for the choice "4"
            try:
                values[str(key)] = option.type_cast_value(ctx, value)
            except click.BadParameter as e:
                issues.append(Issue(str(key), value, e.format_message()))
        if issues:
            message = str(ConfigIssues(str(path), issues))
            err_console.print(f"[bold red]error[/]: {message}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_USAGE)
        ctx.default_map = {**(ctx.default_map or {}), **values}

    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=load,
        help="YAML file of these options by name (top_p: 0.9); flags override it.",
    )(f)

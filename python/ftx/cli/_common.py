"""What every verb shares: options every verb takes, error handling, exit codes, output streams."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

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
        err_console.print(f"[bold red]error[/]: {e}", highlight=False, soft_wrap=True)
        sys.exit(code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")

"""``ftx generate``: a model's answers to one prompt or a JSONL file of them. Importing this
module does not import MLX; ``ftx.inference.session`` does, after the inputs are checked.

The model options and the sampling options (one flag per field of
``ftx.inference.Sampling``) are ``ftx chat``'s too.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ftx.cli._common import common_options, config_file_option, guarded, print_json
from ftx.inference import SAMPLING_FIELDS, Sampling
from ftx.report import err_console

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """MODEL (a base or a fused folder), ``--adapter RUN`` and ``--system``."""
    f = click.option("--system", help="System prompt, before every conversation.")(f)
    f = click.option(
        "--adapter",
        "-a",
        type=click.Path(path_type=Path),
        help="Run folder of `ftx train` (adapters.safetensors): its adapters go on MODEL.",
    )(f)
    return click.argument("model", type=click.Path(path_type=Path))(f)


def sampling_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for field in reversed(dataclasses.fields(Sampling)):
        flag = "--" + field.name.replace("_", "-")
        kind = int if field.type in (int, "int") else float
        f = click.option(
            flag,
            field.name,
            type=kind,
            default=field.default,
            show_default=True,
            help=field.metadata["help"],
        )(f)
    return f


def pop_sampling(keys: dict[str, Any]) -> Sampling:
    """The sampling options out of a command's keywords."""
    return Sampling(**{name: keys.pop(name) for name in SAMPLING_FIELDS})


def say_to_stderr(show: bool) -> Callable[[str], None] | None:
    if not show:
        return None

    def say(message: str) -> None:
        err_console.print(f"[dim]{message}[/]", highlight=False)

    return say


@click.command("generate")
@config_file_option
@model_options
@click.option("--prompt", help="One user message to answer.")
@click.option(
    "--prompts",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSONL file, a line each: {"prompt": TEXT} (and "system") or {"messages": [...]} '
    '(and "tools"). All are answered in one batch.',
)
@sampling_options
@common_options
def command(as_json: bool, quiet: bool, debug: bool, **keys: Any) -> None:
    """Answers to one prompt or a file of prompts, rendered by the model's own template.

    Example: ftx generate MODEL --adapter RUN_DIR --prompt "Hello" --temperature 0.7
    """
    from ftx.errors import ConfigError
    from ftx.inference import generate

    prompt, prompts = keys.pop("prompt"), keys.pop("prompts")
    sampling = pop_sampling(keys)

    def work() -> Any:
        if (prompt is None) == (prompts is None):
            raise ConfigError("give --prompt TEXT or --prompts FILE.jsonl (one of the two)")
        say = say_to_stderr(not quiet and not as_json and sys.stderr.isatty())
        return generate(
            keys["model"],
            prompt if prompt is not None else Path(prompts),
            adapter=keys["adapter"],
            system=keys["system"],
            sampling=sampling,
            progress=say,
        )

    result = guarded(debug, work)
    if as_json:
        print_json(result.to_dict())
        return
    many = len(result.outputs) > 1
    for o in result.outputs:
        if many:
            sys.stdout.write(f"--- {o.source}\n")
        sys.stdout.write(o.text + "\n")
    if not quiet:
        tokens = sum(o.tokens for o in result.outputs)
        err_console.print(
            f"[dim]{len(result.outputs)} answer(s), {tokens} tokens, {result.seconds:.1f}s[/]",
            highlight=False,
        )

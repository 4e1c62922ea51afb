"""``ftx chat``: talk to a model in the terminal, replies streamed as they are generated.
Importing this module does not import MLX; ``ftx.inference.session`` does, after the inputs
are checked.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from ftx.cli._common import common_options, config_file_option, guarded, print_json
from ftx.cli.generate import model_options, pop_sampling, sampling_options, say_to_stderr
from ftx.report import err_console

PROMPT = ">>> "


def typed_lines() -> Iterator[str]:
    """What a person types, line by line, until Ctrl-D; Ctrl-C drops the line being typed."""
    with contextlib.suppress(ImportError):  # not on every platform's Python
        import readline  # noqa: F401  (line editing and history for input())
    while True:
        try:
            yield input(PROMPT)
        except EOFError:
            sys.stdout.write("\n")
            return
        except KeyboardInterrupt:
            sys.stdout.write("\n")


def write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


@click.command("chat")
@config_file_option
@model_options
@sampling_options
@common_options
def command(as_json: bool, quiet: bool, debug: bool, **keys: Any) -> None:
    """Chat with MODEL (a base, a fused folder, or a base with --adapter RUN_DIR).

    Type a message and Enter: the reply streams in. /system TEXT sets the system prompt,
    /reset forgets the conversation, /quit or Ctrl-D leaves, Ctrl-C stops a reply.
    With --json, messages are read from standard input, one a line, and the conversation is
    printed as one JSON object at the end.

    Example: ftx chat MODEL --adapter RUN_DIR --temperature 0.7
    """
    from ftx.inference import open_chat, repl

    sampling = pop_sampling(keys)
    say = say_to_stderr(not quiet and not as_json)
    chat = guarded(
        debug,
        lambda: open_chat(
            keys["model"],
            adapter=keys["adapter"],
            system=keys["system"],
            sampling=sampling,
            progress=say,
        ),
    )
    if as_json:
        notes: list[str] = []
        lines = (line for line in sys.stdin)
        guarded(debug, lambda: list(repl(chat, lines, lambda _: None, notes.append)))
        print_json({**chat.transcript(), "notes": [n.strip() for n in notes]})
        return
    if not quiet:
        err_console.print(
            "[dim]ready: type a message; /help lists the commands, Ctrl-D leaves[/]",
            highlight=False,
        )
    guarded(debug, lambda: list(repl(chat, typed_lines(), write)))

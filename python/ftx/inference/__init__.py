"""``ftx.inference``: the Python face of ``ftx chat`` and ``ftx generate`` (options, checks,
prompt files, results; no MLX).

A model is a model folder (a base, or a folder written by ``ftx fuse``), optionally with a
training run's adapters on top. Every prompt is rendered by ftx's one template engine with the
model's own chat template (``_core.prompts``, the render ``ftx prepare`` trains on, up to the
reply), and decoding stops at any of the model's EOS tokens (``config.json`` and
``generation_config.json``). Loading and batched sampling are ``ftx.evaluation.generation``'s;
the body here, ``session``, adds the streamed, multi-turn chat.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftx.errors import ConfigError, DataError, FtxError, FtxFileNotFoundError
from ftx.model_folder import check_vocabulary, tokenizer_folder, tokenizer_json

if TYPE_CHECKING:
    from ftx.inference.session import ChatSession

Progress = Callable[[str], None]
Message = dict[str, Any]


@dataclass(frozen=True)
class Sampling:
    """How each token is drawn, for both verbs; each field is a flag of both (``--top-p``)."""

    temperature: float = field(
        default=0.0, metadata={"help": "0 is greedy decoding; higher varies the replies."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (1 keeps every token)."})
    top_k: int = field(default=0, metadata={"help": "Only the K most likely tokens (0: all)."})
    min_p: float = field(
        default=0.0, metadata={"help": "Drop tokens less likely than this fraction of the top one."}
    )
    max_tokens: int = field(default=512, metadata={"help": "Tokens per reply at most."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling: same seed, same text."})

    def check(self) -> Sampling:
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature = {self.temperature}: must be >= 0 (0 is greedy)")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p = {self.top_p}: must be in (0, 1] (1 keeps every token)")
        if self.top_k < 0:
            problems.append(f"top_k = {self.top_k}: must be >= 0 (0 keeps every token)")
        if not 0 <= self.min_p < 1:
            problems.append(f"min_p = {self.min_p}: must be in [0, 1) (0 keeps every token)")
        if self.max_tokens < 1:
            problems.append(f"max_tokens = {self.max_tokens}: must be at least 1")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))


def check_model(model: Path, adapter: Path | None) -> None:
    """A model folder, and a run folder with adapters: what loading needs, checked before MLX.
    A folder with only SentencePiece's ``tokenizer.model`` gets its ``tokenizer.json`` here,
    the one ``prepare`` converts (``ftx.model_folder``)."""
    if (model / "config.json").is_file():
        tokenizer_folder(model)
    if not (model / "config.json").is_file() or tokenizer_json(model) is None:
        raise FtxFileNotFoundError(
            f"{model}: not a model folder (config.json and tokenizer.json or tokenizer.model "
            "expected)"
        )
    check_vocabulary(model)
    if adapter is not None:
        for name in ("adapters.safetensors", "adapter_config.json"):
            if not (adapter / name).is_file():
                raise FtxFileNotFoundError(f"{adapter}: no {name}; not a run folder with adapters")


@dataclass(frozen=True)
class Prompt:
    """One conversation to continue: its messages (and tools), and where it was read."""

    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    source: str = "--prompt"


def _messages(value: Any, where: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: 'messages' must be a non-empty list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise DataError(f"{where}: messages[{i}] is not an object with a string 'role'")
    return value


def read_prompts(path: Path) -> list[Prompt]:
    """A JSONL file, one conversation a line: ``{"prompt": TEXT}`` (one user message, with an
    optional ``"system"``) or ``{"messages": [...]}`` (with optional ``"tools"``). Blank lines
    are skipped; anything else fails naming the file and the line."""
    if not path.is_file():
        raise FtxFileNotFoundError(f"{path}: no such prompts file")
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict) or ("prompt" in record) == ("messages" in record):
                raise DataError(f'{where}: expected an object with "prompt" or "messages"')
            if "prompt" in record:
                text, system = record["prompt"], record.get("system")
                if not isinstance(text, str) or not isinstance(system, str | None):
                    raise DataError(f"{where}: 'prompt' and 'system' must be strings")
                out.append(Prompt(conversation(text, system), source=where))
                continue
            tools = record.get("tools")
            if tools is not None and not isinstance(tools, list):
                raise DataError(f"{where}: 'tools' must be a list")
            out.append(Prompt(_messages(record["messages"], where), tools, where))
    if not out:
        raise DataError(f"{path}: no prompts")
    return out


def conversation(text: str, system: str | None = None) -> list[Message]:
    """A user message, after a system prompt where there is one."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": text}]


@dataclass(frozen=True)
class Output:
    source: str
    prompt: str  # as rendered by the model's template, generation prompt included
    text: str
    tokens: int
    finish_reason: str  # "stop" (an EOS token) or "length" (max_tokens)


@dataclass(frozen=True)
class GenerateResult:
    model: Path
    adapter: Path | None
    sampling: Sampling
    outputs: list[Output]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "ftx-generate",
            "model": str(self.model),
            "adapter": None if self.adapter is None else str(self.adapter),
            "sampling": asdict(self.sampling),
            "outputs": [asdict(o) for o in self.outputs],
            "generated_tokens": sum(o.tokens for o in self.outputs),
            "seconds": self.seconds,
        }


def generate(
    model: str | Path,
    prompts: str | Path | Sequence[Prompt],
    *,
    adapter: str | Path | None = None,
    system: str | None = None,
    sampling: Sampling | None = None,
    progress: Progress | None = None,
) -> GenerateResult:
    """Continues each prompt once, all in one batch: ``prompts`` is one user message (a
    ``str``; ``system`` goes before it), a JSONL file (a ``Path``, see ``read_prompts``) or
    ``Prompt`` objects. ``adapter``: a run folder whose adapters go on ``model``."""
    t0 = time.perf_counter()
    s = (sampling or Sampling()).check()
    model_dir, adapter_dir = Path(model), None if adapter is None else Path(adapter)
    check_model(model_dir, adapter_dir)
    if isinstance(prompts, str):
        items = [Prompt(conversation(prompts, system))]
    elif isinstance(prompts, Path):
        if system is not None:
            raise ConfigError("system: give it on each line of the prompts file instead")
        items = read_prompts(prompts)
    else:
        items = list(prompts)
    if not items:
        raise ConfigError("prompts: nothing to generate from")

    from ftx.inference import session  # the body: imports MLX, through ftx.runtime.mlx

    outputs = session.generate_all(model_dir, adapter_dir, items, s, progress or (lambda _: None))
    return GenerateResult(model_dir, adapter_dir, s, outputs, time.perf_counter() - t0)


def open_chat(
    model: str | Path,
    *,
    adapter: str | Path | None = None,
    system: str | None = None,
    sampling: Sampling | None = None,
    progress: Progress | None = None,
) -> ChatSession:
    """A loaded model to talk to: ``send`` streams a reply and keeps the conversation,
    ``reset`` forgets it, ``system`` sets the system prompt. The sampling is seeded once here,
    so the same seed and the same messages give the same replies."""
    s = (sampling or Sampling()).check()
    model_dir, adapter_dir = Path(model), None if adapter is None else Path(adapter)
    check_model(model_dir, adapter_dir)

    from ftx.inference.session import ChatSession

    return ChatSession.load(model_dir, adapter_dir, s, system, progress or (lambda _: None))


HELP = """commands:
  /system TEXT   set the system prompt (the conversation so far is kept); /system alone clears it
  /reset         forget the conversation (the system prompt stays)
  /quit          leave (Ctrl-D does too); Ctrl-C stops a reply"""


def repl(
    chat: ChatSession,
    lines: Iterable[str],
    write: Callable[[str], None],
    note: Callable[[str], None] | None = None,
) -> Iterator[Message]:
    """The chat loop over ``lines`` (what a person types): a command, or a message whose reply
    is streamed to ``write`` piece by piece. What commands answer, and why a message could
    not be sent, goes to ``note`` (default: ``write``). Yields each assistant message."""
    say = note or write
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if command in ("/quit", "/exit"):
            return
        if command == "/reset":
            chat.reset()
            say("(conversation cleared)\n")
        elif command == "/system":
            chat.system = rest.strip() or None
            say(f"(system prompt: {chat.system!r})\n" if chat.system else "(no system prompt)\n")
        elif command in ("/help", "/?"):
            say(HELP + "\n")
        elif command.startswith("/") and " " not in command[1:] and command[1:].isalpha():
            say(f"(unknown command {command}; /help lists them)\n")
        else:
            stream = chat.send(line)
            try:
                for piece in stream:
                    write(piece)
            except KeyboardInterrupt:
                stream.close()  # what was said stands as the reply
                write(" [stopped]")
            except FtxError as e:  # this message cannot be rendered: say why, keep talking
                say(f"(error: {e})\n")
                continue
            write("\n")
            yield chat.messages[-1]


__all__ = [
    "SAMPLING_FIELDS",
    "GenerateResult",
    "Output",
    "Prompt",
    "Sampling",
    "check_model",
    "conversation",
    "generate",
    "open_chat",
    "read_prompts",
    "repl",
]

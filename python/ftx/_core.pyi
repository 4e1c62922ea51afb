"""Type stub of the native module ``ftx._core`` (checked with ``mypy.stubtest``)."""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import final

__all__ = [
    "Setting",
    "__version__",
    "_debug_panic",
    "bind_blas",
    "blas_target",
    "builtin_templates",
    "check_settings",
    "expand_inputs",
    "file_digest",
    "format_names",
    "normalize",
    "num_threads",
    "prepare",
    "prepare_settings",
    "preview",
    "prompts",
    "render_chat",
]

__version__: str

def _debug_panic(message: str) -> None:
    """Raises a Rust panic inside the engine; it must reach Python as ``ftx.FtxError``."""

def bind_blas(sgemm: int, dgemm: int, cgemm: int) -> None:
    """Binds the plain ``cblas_sgemm``, ``cblas_dgemm`` and ``cblas_cgemm`` of this module to the
    functions at these addresses (a loaded library's, with the CBLAS signatures). Binding again
    to other addresses is refused: MLX may already call the first ones."""

def blas_target() -> int:
    """The address ``cblas_sgemm`` of this module forwards to, or 0 when it is not bound."""

def file_digest(path: str | PathLike[str]) -> tuple[int, str]:
    """The size of a file and its xxh3-64 digest (16 hex digits), as a manifest records them."""

def format_names() -> list[str]:
    """Every name ``--format`` accepts (the formats and their other spellings)."""

def num_threads() -> int:
    """The number of worker threads ``prepare`` uses: ``FTX_NUM_THREADS``, else all cores."""

def expand_inputs(patterns: list[str]) -> list[str]:
    """Expands globs and checks that every input exists; returns paths in the order given."""

def builtin_templates() -> list[str]:
    """Names of the chat templates shipped with ftx (for ``--chat-template NAME``)."""

@final
class Setting:
    """One setting of ``prepare`` as the CLI and the Python API present it."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str:
        """``flag``, ``int``, ``ratio``, ``split``, ``choice`` or ``text``."""
    @property
    def help(self) -> str: ...
    @property
    def choices(self) -> list[str]: ...
    @property
    def default(self) -> str:
        """The default as JSON text (``null``, ``true``, ``0``, ``"line"``)."""

def prepare_settings() -> list[Setting]:
    """Every setting of ``prepare`` (what its flags, ``--config`` keys and keywords are made
    from)."""

def check_settings(settings: str) -> list[tuple[str, str, str]]:
    """The problems of a mapping of settings (JSON text), each ``(key, value as JSON, allowed)``;
    empty when it is valid."""

def prepare(
    inputs: Sequence[tuple[str | PathLike[str], str | PathLike[str], int]],
    out_dir: str | PathLike[str],
    settings: str = "{}",
    *,
    model_dir: str | PathLike[str] | None = None,
    tokenizer: str | PathLike[str] | None = None,
    chat_template: str | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Callable[[dict[str, float]], object] | None = None,
) -> str:
    """Runs the whole prepare pipeline with the interpreter released; returns the report as JSON.
    ``settings`` is a JSON object of settings (``prepare_settings``; unknown keys are refused)."""

def normalize(record: str, *, format: str | None = None) -> str:
    """What a template sees of one record (JSON): ``{"format", "messages", "tools"}``,
    ``{"format": "text", "text"}`` or ``{"reject": {"code", "message"}}``."""

def prompts(
    records: list[str],
    *,
    model_dir: str | PathLike[str] | None = None,
    tokenizer: str | PathLike[str] | None = None,
    chat_template: str | None = None,
) -> str:
    """The generation prompts of records (JSON texts), rendered and tokenized as ``prepare``
    renders and tokenizes them, with the generation prompt; returns ``{"template", "items"}``
    as JSON, each item ``{"text", "ids"}`` or ``{"reject"}``."""

def render_chat(
    template: str,
    record: str,
    *,
    add_generation_prompt: bool = False,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> str:
    """Renders one record (JSON) with a chat template's source: ``{"text"}`` or ``{"reject"}``."""

def preview(
    records: list[str],
    *,
    model_dir: str | PathLike[str] | None = None,
    tokenizer: str | PathLike[str] | None = None,
    chat_template: str | None = None,
    format: str | None = None,
    train_on: str = "assistant",
) -> str:
    """Encodes records (JSON texts) as ``prepare`` would; returns JSON ``{"template", "items"}``."""

"""Type stub of the native module ``ftx._core`` (checked with ``mypy.stubtest``)."""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, Literal, TypedDict, final

import numpy as np
import numpy.typing as npt
from typing_extensions import NotRequired

__all__ = [
    "Decoder",
    "Setting",
    "ShardEngine",
    "__version__",
    "_debug_panic",
    "bind_blas",
    "blas_target",
    "builtin_templates",
    "check_settings",
    "collect",
    "expand_inputs",
    "file_digest",
    "format_names",
    "merge",
    "near_duplicates",
    "normalize",
    "num_threads",
    "prepare",
    "prepare_settings",
    "preview",
    "prompts",
    "render_chat",
]

__version__: str

# The shapes of the engine's answers (Rust structs serialized field by field, as dicts). They
# exist only for the type checker: import them under ``TYPE_CHECKING``.

@final
class _Reject(TypedDict):
    code: str
    message: str

@final
class _Rejected(TypedDict):
    """A record the engine refused, with the code and message of ``rejects.jsonl``."""

    reject: _Reject

@final
class _Chat(TypedDict):
    format: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]

@final
class _Text(TypedDict):
    format: Literal["text"]
    text: str

@final
class _Rendered(TypedDict):
    text: str

@final
class _Prompt(TypedDict):
    text: str
    ids: list[int]

@final
class _Encoded(TypedDict):
    text: str
    # [start, end) character ranges of ``text`` covered by trained tokens
    trained: list[list[int]]
    ids: list[int]
    mask: list[int]

@final
class _Prompts(TypedDict):
    template: str
    items: list[_Prompt | _Rejected]

@final
class _Preview(TypedDict):
    template: str
    items: list[_Encoded | _Rejected]

class _InputDigest(TypedDict):
    path: str
    size: int
    sha256: str

class _Tokenizer(TypedDict):
    path: str
    sha256: str
    specials: dict[str, str | None]
    add_bos_token: bool | None
    add_eos_token: bool | None
    # generation_config.json's eos_token_id, sorted; absent where it names none
    generation_eos: NotRequired[list[int]]

class _Lengths(TypedDict):
    min: int
    mean: float
    p50: int
    p95: int
    max: int

class _FileCheck(TypedDict):
    bytes: int
    xxh3: str

class _Split(TypedDict):
    records: int
    tokens: int
    trained_tokens: int
    truncated: int
    lengths: _Lengths | None
    files: dict[str, str]
    checks: dict[str, _FileCheck]

class _Run(TypedDict, total=False):
    cached: bool
    seconds: float
    threads: int
    records_per_s: float  # not in a cache hit's
    tokens_per_s: float  # not in a cache hit's
    out_dir: str

class _Report(TypedDict):
    """``manifest.json`` (``rust/ftx-core/src/manifest.rs``) and ``run``."""

    format: str
    provenance: str
    ftx_version: str
    artifact_version: int
    inputs: list[_InputDigest]
    tokenizer: _Tokenizer
    template: str
    options: dict[str, Any]
    records_read: int
    duplicates: int
    rejected: int
    rejects: dict[str, int]
    rejects_file: str
    splits: dict[str, _Split]
    record_info: _RecordInfo
    run: _Run

class _RecordInfo(TypedDict):
    columns: list[str]
    formats: list[str]

class _Arrays(TypedDict):
    tokens: npt.NDArray[np.uint32]
    mask: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.uint64]
    records: npt.NDArray[np.uint64]

class _Collected(TypedDict):
    """What ``collect`` keeps of a pass over raw files (``pipeline.rs::Collected``)."""

    inputs: list[str]
    template: str
    records_read: int
    duplicates: int
    rejected: int
    rejects: dict[str, int]
    record_info: _RecordInfo
    reject_lines: list[dict[str, Any]]
    splits: dict[str, _Arrays]

class _Segment(TypedDict):
    text: str
    trained: bool

class _LineCount(TypedDict):
    line: str
    records: int

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
        """``flag``, ``int``, ``ratio``, ``split``, ``choice``, ``text`` or ``paths``."""
    @property
    def help(self) -> str: ...
    @property
    def choices(self) -> list[str]: ...
    @property
    def default(self) -> bool | int | float | str | list[str] | None:
        """The default (``None``, ``True``, ``0``, ``"line"``, ``[]``)."""

def near_duplicates(
    texts: Sequence[str],
    *,
    ngram: int = 5,
    permutations: int = 128,
    bands: int | None = None,
    threshold: float = 0.8,
    threads: int | None = None,
) -> list[tuple[int, list[tuple[int, float]]]]:
    """The near-duplicate clusters of ``texts`` (prepare's ``--near-dedup`` on these texts, as
    plain text records): ``(kept, [(member, estimated_jaccard), ...])`` by position in
    ``texts``, the kept record the earliest of its cluster, clusters of one left out. The
    settings are ``prepare``'s ``near_dedup_*`` ones and are checked as they are; ``threads``
    defaults to ``FTX_NUM_THREADS``, else all cores, and never changes the result."""

def prepare_settings() -> list[Setting]:
    """Every setting of ``prepare`` (what its flags, ``--config`` keys and keywords are made
    from)."""

def check_settings(settings: str) -> list[tuple[str, Any, str]]:
    """The problems of a mapping of settings (JSON text), each ``(key, value given, allowed)``;
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
) -> _Report:
    """Runs the whole prepare pipeline with the interpreter released; returns the report: the
    manifest written and ``run``, how it ran. ``settings`` is a JSON object of settings
    (``prepare_settings``; unknown keys are refused)."""

@final
class _ShardManifest(TypedDict):
    format: str
    shard_version: int
    shard: int
    shards: int
    provenance: dict[str, Any]
    hashed: list[int]
    template: str
    parts: list[dict[str, Any]]
    rows: int
    accepted: int
    tokens: int
    signatures: int
    rejects: int
    quote_bytes: int
    files: dict[str, dict[str, Any]]

@final
class ShardEngine:
    """The tokenizer, template and settings of a shard set, loaded once, to run any of its
    shards: what one worker of a cluster holds. The arguments are ``prepare``'s."""

    def __new__(
        cls,
        inputs: Sequence[tuple[str | PathLike[str], str | PathLike[str], int]],
        settings: str = "{}",
        *,
        model_dir: str | PathLike[str] | None = None,
        tokenizer: str | PathLike[str] | None = None,
        chat_template: str | None = None,
        threads: int | None = None,
    ) -> ShardEngine: ...
    def run(
        self,
        index: int,
        count: int,
        out_dir: str | PathLike[str],
        *,
        force: bool = False,
        progress: Callable[[dict[str, float]], object] | None = None,
    ) -> _ShardManifest:
        """Writes shard ``index`` of ``count`` (0-based) to ``out_dir``: that share of the
        inputs, processed up to dedup, for ``merge``. Returns the shard's manifest."""

def merge(
    shards: Sequence[str | PathLike[str]],
    out_dir: str | PathLike[str],
    *,
    memory: int | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Callable[[dict[str, float]], object] | None = None,
) -> _Report:
    """Merges the shards of one ``prepare_shard`` set into the artifact ``prepare`` writes for
    the same inputs and settings, byte for byte. ``memory`` bounds what one dedup partition
    holds (bytes). Returns the report ``prepare`` returns."""

def normalize(record: str, *, format: str | None = None) -> _Chat | _Text | _Rejected:
    """What a template sees of one record (JSON): ``{"format", "messages", "tools"}``,
    ``{"format": "text", "text"}`` or ``{"reject": {"code", "message"}}``."""

def prompts(
    records: list[str],
    *,
    model_dir: str | PathLike[str] | None = None,
    tokenizer: str | PathLike[str] | None = None,
    chat_template: str | None = None,
) -> _Prompts:
    """The generation prompts of records (JSON texts), rendered and tokenized as ``prepare``
    renders and tokenizes them, with the generation prompt; returns ``{"template", "items"}``,
    each item ``{"text", "ids"}`` or ``{"reject"}``."""

def render_chat(
    template: str,
    record: str,
    *,
    add_generation_prompt: bool = False,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> _Rendered | _Rejected:
    """Renders one record (JSON) with a chat template's source: ``{"text"}`` or ``{"reject"}``."""

def preview(
    records: list[str],
    *,
    model_dir: str | PathLike[str] | None = None,
    tokenizer: str | PathLike[str] | None = None,
    chat_template: str | None = None,
    format: str | None = None,
    train_on: str = "assistant",
) -> _Preview:
    """Encodes records (JSON texts) as ``prepare`` would; returns ``{"template", "items"}``,
    each item ``{"text", "trained", "ids", "mask"}`` or ``{"reject"}``."""

def collect(
    inputs: Sequence[tuple[str | PathLike[str], str | PathLike[str], int]],
    settings: str = "{}",
    *,
    model_dir: str | PathLike[str] | None = None,
    tokenizer: str | PathLike[str] | None = None,
    chat_template: str | None = None,
    threads: int | None = None,
    progress: Callable[[dict[str, float]], object] | None = None,
) -> _Collected:
    """What ``prepare`` would write for these inputs and settings, kept in memory: the
    manifest's counts, ``reject_lines`` (the lines of ``rejects.jsonl``) and ``splits``' arrays.
    Nothing is written; no reject limit stops it."""

@final
class Decoder:
    """A model's tokenizer, loaded as ``prepare`` loads it, for turning token ids into text."""

    def __new__(
        cls,
        *,
        model_dir: str | PathLike[str] | None = None,
        tokenizer: str | PathLike[str] | None = None,
    ) -> Decoder: ...
    def segments(self, ids: npt.NDArray[np.uint32], mask: npt.NDArray[np.uint8]) -> list[_Segment]:
        """The text of one record as ``[{"text", "trained"}]``, cut where the mask changes."""
    def repeated_lines(
        self,
        parts: Sequence[tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint64]]],
        top: int,
    ) -> list[_LineCount]:
        """The ``top`` lines found in the most records (two or more) of splits given as
        ``(tokens, offsets)`` pairs."""

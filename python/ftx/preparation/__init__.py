"""``ftx.prepare``: the Python face of the Rust pipeline."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

from ftx import _core
from ftx.errors import ConfigError
from ftx.model_folder import checked_tokenizer_folder
from ftx.preparation.tabular import is_tabular, to_json_lines

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ftx._core import _Report, _ShardManifest

TrainOn = Literal["assistant", "last", "all"]
LengthPolicy = Literal["drop", "truncate", "error"]


@dataclass(frozen=True)
class SplitReport:
    """Counts of one split of a prepared artifact."""

    records: int
    tokens: int
    trained_tokens: int
    truncated: int
    lengths: dict[str, float] | None


@dataclass(frozen=True)
class PrepareReport:
    """What ``prepare`` did. ``manifest`` is the full ``manifest.json`` content."""

    out_dir: Path
    cached: bool
    seconds: float
    records_read: int
    rejected: int
    duplicates: int
    rejects: dict[str, int]
    splits: dict[str, SplitReport]
    template: str
    provenance: str
    manifest: dict[str, Any] = field(repr=False)

    @property
    def accepted(self) -> int:
        return sum(s.records for s in self.splits.values())

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.splits.values())

    @property
    def tokens_per_s(self) -> float:
        return float(self.manifest.get("run", {}).get("tokens_per_s", 0.0))

    @classmethod
    def from_report(cls, m: _Report) -> PrepareReport:
        """The report of what ``_core.prepare`` returned (the manifest and ``run``)."""
        run = m["run"]
        return cls(
            out_dir=Path(run.get("out_dir", ".")),
            cached=run.get("cached", False),
            seconds=run.get("seconds", 0.0),
            records_read=m["records_read"],
            rejected=m["rejected"],
            duplicates=m["duplicates"],
            rejects=dict(m["rejects"]),
            splits={
                name: SplitReport(
                    records=s["records"],
                    tokens=s["tokens"],
                    trained_tokens=s["trained_tokens"],
                    truncated=s["truncated"],
                    # min, p50, p95, max are ints, mean a float: as the manifest has them
                    lengths=cast("dict[str, float] | None", s["lengths"]),
                )
                for name, s in m["splits"].items()
            },
            template=m["template"],
            provenance=m["provenance"],
            manifest=dict(m),
        )


class PrepareSettings(TypedDict, total=False):
    """What ``prepare`` makes of its inputs, as keywords. The settings themselves (defaults,
    choices, what each changes) are declared once, in Rust (``ftx-core/src/options.rs``,
    ``_core.prepare_settings()``); a test keeps these keys equal to them."""

    format: str | None
    columns: str | None
    text_unit: Literal["line", "file"]
    dedup: bool
    near_dedup: bool
    near_dedup_ngram: int
    near_dedup_permutations: int
    near_dedup_bands: int | None
    near_dedup_threshold: float
    decontaminate: Sequence[str | Path]
    decontaminate_ngram: int
    decontaminate_threshold: int
    valid: float | int | str
    test: float | int | str
    seed: int
    max_length: int | None
    length_policy: LengthPolicy
    train_on: TrainOn
    max_reject_ratio: float | None


def check_settings(settings: Mapping[str, Any], source: str) -> None:
    """Raises ``ConfigIssues`` naming every problem of ``settings`` (unknown keys, types,
    choices, ranges), as the Rust engine finds them."""
    from ftx.errors import ConfigIssues, Issue

    found = _core.check_settings(json.dumps(dict(settings), default=str))
    if found:
        raise ConfigIssues(source, [Issue(k, v, allowed) for k, v, allowed in found])


def is_url(pattern: str) -> bool:
    """A path another filesystem opens (``s3://``, ``gs://``, ``hf://``, ``file://``...)."""
    head, sep, _ = pattern.partition("://")
    return bool(sep) and head.isidentifier()


def _fetch(urls: list[str], work: Path) -> list[tuple[Path, str]]:
    """Each URL (globs expanded by its filesystem) copied under ``work``: ``(copy, url)``."""
    try:
        import fsspec  # type: ignore[import-untyped]  # no py.typed
    except ImportError:
        raise ConfigError(f"{urls[0]}: reading URLs needs fsspec (pip install fsspec)") from None
    out: list[tuple[Path, str]] = []
    for url in urls:
        fs, path = fsspec.core.url_to_fs(url)
        globbed = any(c in path for c in "*?[")
        found = sorted(fs.glob(path)) if globbed else [path]
        if not found or not all(fs.isfile(f) for f in found):
            raise ConfigError(f"no file at {url}")
        for f in found:
            # A URL given is named as given, as a local path is; a glob's files by their URL.
            origin = fs.unstrip_protocol(f) if globbed else url
            (work / "remote").mkdir(exist_ok=True)
            copy = Path(tempfile.mkdtemp(dir=work / "remote")) / Path(f).name
            fs.get_file(f, str(copy))
            out.append((copy, origin))
    return out


@contextmanager
def input_triples(
    inputs: str | Path | Sequence[str | Path],
) -> Iterator[list[tuple[str, str, int]]]:
    """The engine's ``(path_to_read, original_path, line_offset)`` of each input: globs
    expanded, a URL's file fetched through fsspec (the artifact names the URL; its sha256 is
    the bytes fetched), Parquet and CSV converted to JSON lines, all in a folder removed on
    exit."""
    patterns = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(p) for p in inputs]
    with tempfile.TemporaryDirectory(prefix="ftx-inputs-") as tmp:
        work = Path(tmp)
        files: list[tuple[Path, str]] = []
        for p in patterns:
            if is_url(p):
                files.extend(_fetch([p], work))
            else:
                files.extend((f, str(f)) for f in map(Path, _core.expand_inputs([p])))
        triples: list[tuple[str, str, int]] = []
        for path, origin in files:
            if is_tabular(path):
                converted, offset = to_json_lines(path, work)
                triples.append((str(converted), origin, offset))
            else:
                triples.append((str(path), origin, 0))
        yield triples


def prepare(
    inputs: str | Path | Sequence[str | Path],
    *,
    out: str | Path,
    model: str | Path | None = None,
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Callable[[dict[str, float]], None] | None = None,
    say: Callable[[str], object] = lambda _: None,
    **settings: Unpack[PrepareSettings],
) -> PrepareReport:
    """Turns raw chat/instruction data into a memory-mappable token artifact at ``out``.

    ``settings`` are those of ``_core.prepare_settings()`` (``ftx prepare --help`` shows them):
    ``valid``/``test`` take a ratio (``0.1``) or a number of records (``500``). The artifact is
    published atomically; re-running with identical inputs and settings is a cache hit.
    A ``model`` folder whose config.json, weights and tokenizer disagree is refused before
    anything is written; one with only a SentencePiece ``tokenizer.model`` gets its
    ``tokenizer.json`` first (``ftx.model_folder``; ``say`` hears where it was written).
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads = {threads!r}: must be a whole number, 1 or more")
    check_settings(settings, "ftx.prepare")
    model_dir = None if model is None else checked_tokenizer_folder(Path(model), say)
    with input_triples(inputs) as triples:
        report = _core.prepare(
            triples,
            str(out),
            json.dumps(dict(settings), default=str),
            model_dir=None if model_dir is None else str(model_dir),
            tokenizer=None if tokenizer is None else str(tokenizer),
            chat_template=chat_template,
            threads=threads,
            force=force,
            progress=progress,
        )
    return PrepareReport.from_report(report)


@dataclass(frozen=True)
class ShardReport:
    """What ``prepare_shard`` wrote: one shard of a set, for ``merge``. ``manifest`` is the
    shard's ``manifest.json``."""

    out_dir: Path
    shard: int
    shards: int
    rows: int
    accepted: int
    rejected: int
    tokens: int
    manifest: dict[str, Any] = field(repr=False)


def parse_shard(shard: str | tuple[int, int]) -> tuple[int, int]:
    """``"I/N"`` or ``(I, N)`` as ``(I, N)``, checked: ``0 <= I < N``."""
    if isinstance(shard, str):
        head, _, tail = shard.partition("/")
        try:
            index, count = int(head), int(tail)
        except ValueError:
            raise ConfigError(f"shard = {shard!r}: expected I/N, e.g. 0/4") from None
    else:
        index, count = shard
    if not 0 <= index < count:
        raise ConfigError(f"shard = {index}/{count}: expected I/N with 0 <= I < N")
    return index, count


def prepare_shard(
    inputs: str | Path | Sequence[str | Path],
    *,
    out: str | Path,
    shard: str | tuple[int, int],
    model: str | Path | None = None,
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Callable[[dict[str, float]], None] | None = None,
    say: Callable[[str], object] = lambda _: None,
    **settings: Unpack[PrepareSettings],
) -> ShardReport:
    """``prepare`` of one share of the inputs (``shard`` is ``"I/N"``, 0-based), written to
    ``out`` as a shard; ``merge`` of all N shards writes the artifact ``prepare`` would, byte for
    byte. Every shard is given the same inputs and settings; each reads only its byte range."""
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads = {threads!r}: must be a whole number, 1 or more")
    index, count = parse_shard(shard)
    check_settings(settings, "ftx.prepare")
    # the model folder as prepare reads it, so the merged artifact is the one prepare writes
    model_dir = None if model is None else checked_tokenizer_folder(Path(model), say)
    with input_triples(inputs) as triples:
        engine = _core.ShardEngine(
            triples,
            json.dumps(dict(settings), default=str),
            model_dir=None if model_dir is None else str(model_dir),
            tokenizer=None if tokenizer is None else str(tokenizer),
            chat_template=chat_template,
            threads=threads,
        )
        m = engine.run(index, count, str(out), force=force, progress=progress)
    return shard_report(Path(out), m)


def shard_report(out: Path, m: _ShardManifest) -> ShardReport:
    """The report of a shard's manifest."""
    return ShardReport(
        out_dir=out,
        shard=m["shard"],
        shards=m["shards"],
        rows=m["rows"],
        accepted=m["accepted"],
        rejected=m["rejects"],
        tokens=m["tokens"],
        manifest=dict(m),
    )


def merge(
    shards: Sequence[str | Path],
    *,
    out: str | Path,
    memory_mb: int | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> PrepareReport:
    """The shards of one ``prepare_shard`` set (all N of them, in any order) into the artifact
    ``prepare`` writes on one machine: the same bytes, the same manifest. ``memory_mb`` bounds
    what one dedup partition holds (default 256)."""
    if memory_mb is not None and (not isinstance(memory_mb, int) or memory_mb < 1):
        raise ConfigError(f"memory_mb = {memory_mb!r}: must be a whole number, 1 or more")
    report = _core.merge(
        [str(s) for s in shards],
        str(out),
        memory=None if memory_mb is None else memory_mb << 20,
        threads=threads,
        force=force,
        progress=progress,
    )
    return PrepareReport.from_report(report)

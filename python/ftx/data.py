"""Prepared datasets, memory-mapped: ``ds[i]`` is a pair of NumPy views into the artifact."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from ftx.errors import DataError, FtxFileNotFoundError
from ftx.model_folder import tokenizer_json

Example = tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]
MANIFEST = "manifest.json"
DTYPES = {"tokens": np.uint32, "mask": np.uint8, "offsets": np.uint64}
# The columns of ``{split}.records.npy`` (``manifest.rs::RECORD_COLUMNS``).
RECORD_COLUMNS = ("source", "line", "format", "turns")


def _checked_array(path: Path, dtype: type[np.generic], check: Any, ndim: int = 1) -> Any:
    """The memory-mapped ``ndim``-D array at ``path`` after its size and xxh3 digest matched
    what the manifest recorded and its dtype is ``dtype``; a damaged file is a DataError, never
    read."""
    from ftx import _core

    if not path.is_file():
        raise DataError(f"{path}: missing from the artifact; prepare it again")
    if not isinstance(check, dict):
        raise DataError(f"{path}: the manifest records no checksum for it; prepare it again")
    size, digest = _core.file_digest(str(path))
    if size != check.get("bytes") or digest != check.get("xxh3"):
        raise DataError(
            f"{path}: changed since ftx prepare wrote it ({size} bytes, xxh3 {digest}; the "
            f"manifest says {check.get('bytes')} bytes, xxh3 {check.get('xxh3')}); prepare it again"
        )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e}); prepare it again") from e
    if array.dtype != np.dtype(dtype).newbyteorder("<") or array.ndim != ndim:
        raise DataError(
            f"{path}: a {array.ndim}-D {array.dtype} array, expected {ndim}-D {np.dtype(dtype)}"
        )
    return array


@dataclass(frozen=True)
class SplitEntry:
    """One split as ``manifest.json`` records it."""

    records: int
    tokens: int
    trained_tokens: int
    files: dict[str, str]
    # array name -> {"bytes", "xxh3"}; None in an artifact of an older ftx
    checks: dict[str, Any] | None


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of a prepared artifact (written by ``rust/ftx-core/src/manifest.rs``),
    its shape checked once, where it is read."""

    path: Path
    provenance: str
    tokenizer_sha256: str
    splits: dict[str, SplitEntry]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, path: Path, raw: Any) -> Manifest:
        if not isinstance(raw, dict) or raw.get("format") != "ftx-prepared":
            raise DataError(f"{path}: not an ftx prepared artifact")
        try:
            splits = {
                str(name): SplitEntry(
                    records=int(v["records"]),
                    tokens=int(v["tokens"]),
                    trained_tokens=int(v["trained_tokens"]),
                    files={str(k): str(f) for k, f in v.get("files", {}).items()},
                    checks=v.get("checks") if isinstance(v.get("checks"), dict) else None,
                )
                for name, v in raw["splits"].items()
            }
            return cls(
                path=path,
                provenance=str(raw["provenance"]),
                tokenizer_sha256=str(raw["tokenizer"]["sha256"]),
                splits=splits,
                raw=raw,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # edited out of shape
            raise DataError(f"{path}: malformed ({e!r}); prepare it again") from e

    def nonempty_splits(self) -> tuple[str, ...]:
        return tuple(name for name, s in self.splits.items() if s.records > 0)

    def check_tokenizer(self, model: Path) -> str | None:
        """Why this artifact was not tokenized with ``model``'s tokenizer (its ids would mean
        other tokens, so its loss means nothing), or None when it was or ``model`` has no
        tokenizer to compare. The one check train, evaluate and fuse make."""
        ours = model_tokenizer_sha256(model)
        if ours is None or self.tokenizer_sha256 == ours:
            return None
        return (
            f"{self.path.parent} was tokenized with another tokenizer (sha256 "
            f"{self.tokenizer_sha256}) than {model}'s (sha256 {ours}); prepare it again with "
            "this model"
        )


class PreparedDataset(Sequence[Example]):
    """One split of an artifact written by ``ftx prepare``. Nothing is read into memory until
    indexed, and indexing returns views (no copy)."""

    def __init__(
        self, root: Path, split: str, manifest: Manifest, vocab_rows: int | None = None
    ) -> None:
        self.root = root
        self.split = split
        self.manifest = manifest.raw
        entry = manifest.splits[split]
        files, checks = entry.files, entry.checks
        self._files, self._checks = files, checks
        self._trained_tokens = entry.trained_tokens
        self._tokenizer_sha256 = manifest.tokenizer_sha256
        if checks is None:
            raise DataError(
                f"{root / MANIFEST}: split {split!r} records no checksums (written by an older "
                "ftx); prepare it again"
            )
        arrays = {}
        for name, dtype in DTYPES.items():
            path = root / str(files.get(name, f"{split}.{name}.npy"))
            arrays[name] = _checked_array(path, dtype, checks.get(name))
        self.tokens: npt.NDArray[np.uint32] = arrays["tokens"]
        self.mask: npt.NDArray[np.uint8] = arrays["mask"]
        self.offsets: npt.NDArray[np.uint64] = arrays["offsets"]
        where = f"{root}: split {split!r}"
        if len(self.mask) != len(self.tokens):
            raise DataError(f"{where}: {len(self.mask)} mask values for {len(self.tokens)} tokens")
        offsets = self.offsets
        if len(offsets) == 0 or int(offsets[0]) != 0 or int(offsets[-1]) != len(self.tokens):
            raise DataError(f"{where}: offsets must run from 0 to the token count; prepare again")
        if len(offsets) > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            raise DataError(f"{where}: offsets go backwards; prepare it again")
        if len(self.mask) and int(self.mask.max()) > 1:
            raise DataError(f"{where}: mask values other than 0 and 1; prepare it again")
        if vocab_rows is not None:
            self.check_ids(vocab_rows)

    def check_ids(self, vocab_rows: int) -> None:
        """Refuses token ids the model has no embedding row for (MLX would read out of bounds)."""
        if len(self.tokens) and (top := int(self.tokens.max())) >= vocab_rows:
            raise DataError(
                f"{self.root}: split {self.split!r} has token id {top}, but the model's "
                f"embedding has {vocab_rows} rows (ids 0 to {vocab_rows - 1}): prepare the data "
                "with this model's tokenizer"
            )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def records(self) -> npt.NDArray[np.uint64]:
        """Where each record came from, one row per record: the columns of the manifest's
        ``record_info`` (``source``: index in ``inputs``, ``line``, ``format``: index in
        ``record_info["formats"]``, ``turns``), checked like the other arrays and against the
        manifest's tables. Read only when asked for (``ftx inspect``), so training never needs
        it."""
        where = f"{self.root / MANIFEST}: split {self.split!r}"
        info = self.manifest.get("record_info")
        check = (self._checks or {}).get("records")
        if not isinstance(info, dict) or check is None:
            raise DataError(
                f"{where} has no per-record information (written by an older ftx, artifact "
                f"version {self.manifest.get('artifact_version')}); prepare it again"
            )
        columns = info.get("columns")
        if columns != list(RECORD_COLUMNS):
            raise DataError(f"{where}: record_info columns {columns}, expected {RECORD_COLUMNS}")
        path = self.root / str(self._files.get("records", f"{self.split}.records.npy"))
        rows: npt.NDArray[np.uint64] = _checked_array(path, np.uint64, check, ndim=2)
        if rows.shape != (len(self), len(RECORD_COLUMNS)):
            raise DataError(f"{path}: shape {rows.shape}, expected ({len(self)}, 4)")
        formats, inputs = info.get("formats"), self.manifest.get("inputs")
        if not isinstance(formats, list) or not isinstance(inputs, list):
            raise DataError(f"{where}: record_info or inputs malformed; prepare it again")
        limits = {"source": len(inputs), "format": len(formats)}
        for name, limit in limits.items():
            col = rows[:, RECORD_COLUMNS.index(name)]
            if len(col) and int(col.max()) >= limit:
                raise DataError(f"{path}: a {name} index {int(col.max())} of {limit}")
        return rows

    @overload
    def __getitem__(self, i: int) -> Example: ...
    @overload
    def __getitem__(self, i: slice) -> list[Example]: ...
    def __getitem__(self, i: int | slice) -> Example | list[Example]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range for {n} records")
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tokens[a:b], self.mask[a:b]

    def __iter__(self) -> Iterator[Example]:
        for i in range(len(self)):
            yield self[i]

    def lengths(self) -> npt.NDArray[np.int64]:
        """Token count of every record (computed from the offsets, no token is read)."""
        offsets = np.asarray(self.offsets, dtype=np.int64)
        return offsets[1:] - offsets[:-1]

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_trained_tokens(self) -> int:
        return self._trained_tokens

    @property
    def tokenizer_sha256(self) -> str:
        return self._tokenizer_sha256


def model_tokenizer_sha256(model: Path) -> str | None:
    """sha256 of the decompressed bytes of the model folder's ``tokenizer.json`` (or
    ``tokenizer.json.gz``), as ``ftx prepare`` records it, so a gzipped and a plain copy of one
    tokenizer hash the same (a folder with only ``tokenizer.model``: its conversion's); None
    when the folder has none."""
    import gzip
    import hashlib

    path = tokenizer_json(model)
    if path is None:
        return None
    h = hashlib.sha256()
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gzipped else path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: str | Path) -> Manifest:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise FtxFileNotFoundError(
            f"{root}: no manifest.json; this is not a complete artifact of `ftx prepare`"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); prepare it again") from e
    return Manifest.parse(path, raw)


def load_dataset(
    root: str | Path, split: str = "train", vocab_rows: int | None = None
) -> PreparedDataset:
    """Opens one split (``train``, ``valid`` or ``test``) of a prepared artifact, checked: each
    array's size and xxh3 digest against the manifest, dtypes, offsets and mask values, and
    with ``vocab_rows`` (the model's embedding rows) every token id below it."""
    root = Path(root)
    manifest = read_manifest(root)
    if split not in manifest.splits:
        raise DataError(f"{root}: no split {split!r}; it has {sorted(manifest.splits)}")
    return PreparedDataset(root, split, manifest, vocab_rows)

"""Prepared datasets, memory-mapped: ``ds[i]`` is a pair of NumPy views into the artifact."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from ftx.errors import DataError, FtxFileNotFoundError

Example = tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]


class PreparedDataset(Sequence[Example]):
    """One split of an artifact written by ``ftx prepare``. Nothing is read into memory until
    indexed, and indexing returns views (no copy)."""

    def __init__(self, root: Path, split: str, manifest: dict[str, Any]) -> None:
        self.root = root
        self.split = split
        self.manifest = manifest
        files = manifest["splits"][split]["files"]
        self.tokens: npt.NDArray[np.uint32] = np.load(root / files["tokens"], mmap_mode="r")
        self.mask: npt.NDArray[np.uint8] = np.load(root / files["mask"], mmap_mode="r")
        self.offsets: npt.NDArray[np.uint64] = np.load(root / files["offsets"], mmap_mode="r")
        if len(self.offsets) == 0 or int(self.offsets[-1]) != len(self.tokens):
            raise DataError(f"{root}: {split} arrays are inconsistent; prepare it again")

    def __len__(self) -> int:
        return len(self.offsets) - 1

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
        return int(self.manifest["splits"][self.split]["trained_tokens"])

    @property
    def tokenizer_sha256(self) -> str:
        return str(self.manifest["tokenizer"]["sha256"])


def read_manifest(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise FtxFileNotFoundError(
            f"{root}: no manifest.json; this is not a complete artifact of `ftx prepare`"
        )
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != "ftx-prepared":
        raise DataError(f"{path}: not an ftx prepared artifact")
    return manifest


def load_dataset(root: str | Path, split: str = "train") -> PreparedDataset:
    """Opens one split (``train``, ``valid`` or ``test``) of a prepared artifact."""
    root = Path(root)
    manifest = read_manifest(root)
    if split not in manifest["splits"]:
        raise DataError(f"{root}: no split {split!r}; it has {sorted(manifest['splits'])}")
    return PreparedDataset(root, split, manifest)

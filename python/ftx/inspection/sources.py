"""What ``inspect`` reads: a prepared artifact, checked as ``ftx.data`` checks it, or raw files
run through the engine's pass into memory (``_core.collect``). Both become one ``Data``, so the
statistics cannot tell them apart."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ftx import _core
from ftx.data import RECORD_COLUMNS, read_manifest
from ftx.errors import DataError, FtxFileNotFoundError
from ftx.model_folder import checked_tokenizer_folder, tokenizer_folder


@dataclass(frozen=True)
class SplitData:
    tokens: npt.NDArray[np.uint32]
    mask: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.uint64]
    # one row of RECORD_COLUMNS per record
    records: npt.NDArray[np.uint64]


@dataclass(frozen=True)
class Data:
    """An artifact's contents, wherever they came from."""

    origin: str
    inputs: list[str]
    formats: list[str]
    template: str
    records_read: int
    duplicates: int
    rejects: dict[str, int]
    reject_lines: list[dict[str, Any]]
    splits: dict[str, SplitData]
    decoder: _core.Decoder


def _decoder(model: Path | None, tokenizer: Path | None) -> _core.Decoder:
    return _core.Decoder(
        model_dir=None if model is None else str(tokenizer_folder(model)),
        tokenizer=None if tokenizer is None else str(tokenizer),
    )


def _reject_lines(path: Path, codes: Sequence[str]) -> list[dict[str, Any]]:
    """The lines of ``rejects.jsonl`` whose code is one of ``codes`` (the others are counted
    in the manifest already)."""
    if not path.is_file():
        raise DataError(f"{path}: missing from the artifact; prepare it again")
    found = []
    with path.open(encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            try:
                line = json.loads(text)
            except ValueError as e:
                raise DataError(f"{path}:{n}: not a JSON line ({e}); prepare it again") from e
            if isinstance(line, dict) and line.get("code") in codes:
                found.append(line)
    return found


def from_artifact(
    root: Path, model: Path | None, tokenizer: Path | None, codes: Sequence[str]
) -> Data:
    """A prepared artifact, every array checked (sizes, digests, dtypes, offsets, mask values,
    the per-record table). Its tokens are decoded with ``model`` or ``tokenizer`` when given
    (which must be the tokenizer it was prepared with), else with the one the manifest names."""
    from ftx.data import PreparedDataset

    if not root.is_dir():
        raise FtxFileNotFoundError(f"{root}: no such folder")
    manifest = read_manifest(root)
    raw = manifest.raw
    if model is not None:
        problem = manifest.check_tokenizer(model)
        if problem:
            raise DataError(problem)
    elif tokenizer is None:
        recorded = Path(str(raw["tokenizer"]["path"]))
        if not recorded.exists():
            raise FtxFileNotFoundError(
                f"{root / 'manifest.json'}: the tokenizer it was prepared with, {recorded}, is "
                "not there; pass --model DIR (or --tokenizer FILE) to decode its records"
            )
        model, tokenizer = (recorded, None) if recorded.is_dir() else (None, recorded)
    splits = {}
    for name in manifest.splits:
        ds = PreparedDataset(root, name, manifest)
        splits[name] = SplitData(ds.tokens, ds.mask, ds.offsets, ds.records())
    if not any(len(s.offsets) > 1 for s in splits.values()):
        raise DataError(f"{root}: the artifact holds no record")
    return Data(
        origin=str(root),
        inputs=[str(i["path"]) for i in raw["inputs"]],
        formats=[str(f) for f in raw["record_info"]["formats"]],
        template=str(raw["template"]),
        records_read=int(raw["records_read"]),
        duplicates=int(raw["duplicates"]),
        rejects={str(k): int(v) for k, v in raw["rejects"].items()},
        reject_lines=_reject_lines(root / str(raw.get("rejects_file", "rejects.jsonl")), codes),
        splits=splits,
        decoder=_decoder(model, tokenizer),
    )


def from_files(
    inputs: str | Path | Sequence[str | Path],
    *,
    model: Path | None,
    tokenizer: Path | None,
    chat_template: str | None,
    threads: int | None,
    settings: Mapping[str, Any],
    codes: Sequence[str],
    progress: Callable[[dict[str, float]], None] | None,
) -> Data:
    """Raw files through the engine's pass, as ``prepare`` with these settings would make
    them; nothing is written."""
    from ftx.preparation import check_settings, input_triples

    check_settings(settings, "ftx.inspect")
    model_dir = None if model is None else checked_tokenizer_folder(model)
    with input_triples(inputs) as triples:
        got = _core.collect(
            triples,
            json.dumps(dict(settings)),
            model_dir=None if model_dir is None else str(model_dir),
            tokenizer=None if tokenizer is None else str(tokenizer),
            chat_template=chat_template,
            threads=threads,
            progress=progress,
        )
    if list(got["record_info"]["columns"]) != list(RECORD_COLUMNS):
        raise DataError(f"the engine's record columns {got['record_info']['columns']} changed")
    splits = {
        name: SplitData(a["tokens"], a["mask"], a["offsets"], a["records"])
        for name, a in got["splits"].items()
    }
    return Data(
        origin=", ".join(got["inputs"]),
        inputs=list(got["inputs"]),
        formats=list(got["record_info"]["formats"]),
        template=got["template"],
        records_read=got["records_read"],
        duplicates=got["duplicates"],
        rejects=dict(got["rejects"]),
        reject_lines=[r for r in got["reject_lines"] if r.get("code") in codes],
        splits=splits,
        decoder=_decoder(model, tokenizer),
    )

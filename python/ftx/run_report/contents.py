"""What a run report shows, read from a run folder: no plotting here, so every check runs
before the plotting library is imported.

Required: ``manifest.json`` and ``metrics.jsonl`` with at least one step. Everything else
(``config.yaml``, the prepared data, the evaluation) is shown when it is there and readable;
when it is not, a note names what is missing and the report is written without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ftx.data import load_dataset, read_manifest
from ftx.errors import DataError, FtxError, FtxFileNotFoundError
from ftx.run_folder import (
    CONFIG,
    EVAL_DIR,
    EVAL_EXAMPLES,
    EVAL_RESULTS,
    METRICS,
    RUN_FORMAT,
    RUN_MANIFEST,
)


@dataclass(frozen=True)
class SplitData:
    """One split of the prepared artifact: its manifest counts and every record's length."""

    name: str
    records: int
    tokens: int
    trained_tokens: int
    lengths: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Evaluation:
    """``results.json`` of ``ftx evaluate`` and its ``examples.jsonl`` lines."""

    folder: Path
    results: dict[str, Any]
    examples: list[dict[str, Any]]


@dataclass(frozen=True)
class RunContents:
    run_dir: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    steps: list[dict[str, Any]]  # metrics.jsonl's step lines, in order
    events: list[dict[str, Any]]  # its event lines (resumed, checkpoint, stopped, ...)
    data: Path | None
    splits: list[SplitData]
    evaluation: Evaluation | None
    notes: list[str] = field(default_factory=list)  # what is missing, shown on the page

    @property
    def summary(self) -> dict[str, Any] | None:
        """``TrainReport.to_dict()`` as the manifest holds it; None while the run is going."""
        report = self.manifest.get("report")
        return report if isinstance(report, dict) else None


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from e


def _json_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as e:
            raise DataError(f"{path}:{n}: not a JSON line ({e})") from e
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: a JSON object expected")
        rows.append(row)
    return rows


def _config(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    path = run_dir / CONFIG
    if not path.is_file():
        notes.append(f"{path} is missing: the config is not shown")
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        notes.append(f"{path} is not readable YAML ({e}): the config is not shown")
        return {}
    return data if isinstance(data, dict) else {}


def _splits(data: Path, notes: list[str]) -> list[SplitData]:
    try:
        manifest = read_manifest(data)
        return [
            SplitData(
                name,
                entry.records,
                entry.tokens,
                entry.trained_tokens,
                load_dataset(data, name).lengths(),
            )
            for name, entry in manifest.splits.items()
            if entry.records > 0
        ]
    except FtxError as e:
        notes.append(
            f"the prepared data is not readable ({e}): no data summary or length histogram"
        )
        return []


def _evaluation(folder: Path, given: bool, notes: list[str]) -> Evaluation | None:
    results = folder / EVAL_RESULTS
    if not results.is_file():
        if given:
            raise FtxFileNotFoundError(f"{folder}: no {EVAL_RESULTS} (written by `ftx evaluate`)")
        return None
    try:
        body = _json_file(results)
        examples = folder / EVAL_EXAMPLES
        lines = _json_lines(examples) if examples.is_file() else []
    except DataError as e:
        if given:
            raise
        notes.append(f"the evaluation is not shown: {e}")
        return None
    return Evaluation(folder, body, lines)


def read_run(run_dir: Path, eval_dir: Path | None = None) -> RunContents:
    """Reads ``run_dir`` (and the evaluation in ``eval_dir``, default ``RUN_DIR/eval`` when
    it is there). Raises when the folder is not a run with metrics; notes the rest."""
    if not run_dir.is_dir():
        raise FtxFileNotFoundError(f"{run_dir}: no such folder (a run folder of `ftx train`)")
    missing = [n for n in (RUN_MANIFEST, METRICS) if not (run_dir / n).is_file()]
    if missing:
        raise FtxFileNotFoundError(
            f"{run_dir}: no {' or '.join(missing)}; not a run folder of `ftx train`, or one "
            "whose run stopped before it logged anything"
        )
    manifest = _json_file(run_dir / RUN_MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
        raise DataError(f"{run_dir / RUN_MANIFEST}: not the manifest of an `ftx train` run")
    lines = _json_lines(run_dir / METRICS)
    steps = [r for r in lines if not r.get("event") and isinstance(r.get("step"), int)]
    if not steps:
        raise DataError(
            f"{run_dir / METRICS}: no step was logged (the run stopped before its first "
            "report); nothing to chart"
        )
    notes: list[str] = []
    if not isinstance(manifest.get("report"), dict):
        notes.append(
            f"{run_dir / RUN_MANIFEST} has no final report (the run is going on, or it stopped "
            "early): no totals, best step or stop reason"
        )
    inputs = manifest.get("inputs")
    data_path = inputs.get("data") if isinstance(inputs, dict) else None
    data = Path(data_path) if isinstance(data_path, str) else None
    if data is None:
        notes.append(f"{run_dir / RUN_MANIFEST} names no data (inputs.data): no data summary")
    return RunContents(
        run_dir=run_dir,
        manifest=manifest,
        config=_config(run_dir, notes),
        steps=steps,
        events=[r for r in lines if r.get("event")],
        data=data,
        splits=[] if data is None else _splits(data, notes),
        evaluation=_evaluation(eval_dir or run_dir / EVAL_DIR, eval_dir is not None, notes),
        notes=notes,
    )

"""Checkpoints: everything a run needs to continue bit-exactly, written all-or-nothing.

A checkpoint is a folder ``checkpoints/step-NNNNNNN`` holding the trainable weights (also as an
mlx-lm adapter: ``adapters.safetensors`` + ``adapter_config.json``), the optimizer state
(``optimizer.safetensors``) and ``state.json``: step, data cursor, random states, early-stopping
state, metrics so far, data provenance, resolved config, and the sha256 of every other file.
The folder is built under a temporary name and renamed when complete, so it is whole or absent;
``load`` re-checks the checksums, so a damaged one is skipped rather than trusted.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx

from mlx.utils import tree_unflatten

from ftx.errors import FtxError, FtxIOError
from ftx.files import TEMP_PREFIX, publish_folder, sha256_file
from ftx.training.model import ADAPTER_CONFIG, ADAPTERS, flatten

CHECKPOINTS = "checkpoints"
STATE = "state.json"
OPTIMIZER = "optimizer.safetensors"
STEP_DIR = re.compile(r"^step-(\d{7,})$")
FORMAT = "ftx-checkpoint"


class CheckpointError(FtxError):
    """A checkpoint is incomplete, damaged or does not belong to this run."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def weights(self) -> list[tuple[str, mx.array]]:
        return list(mx.load(str(self.path / ADAPTERS)).items())  # type: ignore[union-attr]

    def optimizer_state(self) -> Any:
        flat = mx.load(str(self.path / OPTIMIZER))
        return tree_unflatten(list(flat.items()))  # type: ignore[union-attr]


def folder(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:07d}"


def _all_finite(arrays: dict[str, mx.array]) -> bool:
    checks = [mx.isfinite(v).all() for v in arrays.values() if mx.issubdtype(v.dtype, mx.floating)]
    return all(bool(c.item()) for c in checks)


def save(
    run_dir: Path,
    weights: dict[str, mx.array],
    optimizer_state: Any,
    state: dict[str, Any],
    adapter_meta: dict[str, Any],
) -> Path:
    """Writes the checkpoint of ``state["step"]``; ``FtxIOError`` if it cannot, in which case
    no part of it is left behind and older checkpoints are untouched."""
    if not _all_finite(weights):
        raise CheckpointError(f"step {state['step']}: weights are not finite; not checkpointed")
    final = folder(run_dir, int(state["step"]))
    temp = final.with_name(TEMP_PREFIX + final.name)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        mx.save_safetensors(str(temp / ADAPTERS), weights)
        mx.save_safetensors(str(temp / OPTIMIZER), dict(flatten(optimizer_state)))
        (temp / ADAPTER_CONFIG).write_text(json.dumps(adapter_meta, indent=2) + "\n")
        files = {f.name: sha256_file(f) for f in sorted(temp.iterdir())}
        body = {"format": FORMAT, **state, "files": files}
        (temp / STATE).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    except (OSError, RuntimeError) as e:  # MLX raises RuntimeError when a write fails
        shutil.rmtree(temp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise FtxIOError(f"{final}: cannot write the checkpoint ({reason})") from e
    publish_folder(temp, final)
    return final


def load(path: Path) -> Checkpoint:
    """The checkpoint at ``path`` after checking that every file matches its checksum."""
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: no readable {STATE} ({e})") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ftx checkpoint")
    for name, sha in state["files"].items():
        f = path / name
        if not f.is_file() or sha256_file(f) != sha:
            raise CheckpointError(f"{f}: missing or does not match its checksum")
    return Checkpoint(path, state)


def steps(run_dir: Path) -> list[int]:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := STEP_DIR.match(p.name)))


def latest(run_dir: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that verifies, and why any newer one was passed over."""
    skipped: list[str] = []
    for step in reversed(steps(run_dir)):
        try:
            return load(folder(run_dir, step)), skipped
        except CheckpointError as e:
            skipped.append(str(e))
    return None, skipped


def prune(run_dir: Path, keep: int, protect: set[int]) -> None:
    """Deletes all but the newest ``keep`` checkpoints and those in ``protect`` (the best)."""
    done = steps(run_dir)
    for step in done[: max(0, len(done) - keep)]:
        if step not in protect:
            shutil.rmtree(folder(run_dir, step), ignore_errors=True)


def remove_partial(run_dir: Path) -> None:
    """Leftovers of a write that was killed: temporary folders never renamed into place."""
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TEMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob(TEMP_PREFIX + "*"):
        if p.is_file():
            p.unlink(missing_ok=True)

"""Output folders written in full beside their destination, then renamed into place.

A reader sees either the old folder or the complete new one, never a half-written one; the
files are fsynced before the rename makes them visible.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftx.errors import ConfigError, FtxIOError


@contextmanager
def staged_folder(dst: Path, force: bool) -> Iterator[Path]:
    """Yields an empty folder to fill; on a normal exit it replaces ``dst``.

    ``dst`` must not exist unless ``force``. On an error nothing is left behind.
    """
    check_free(dst, force)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        # mkdtemp's folder is private (0700); the output is an ordinary folder.
        tmp.chmod(0o755)
        yield tmp
        for p in [*tmp.iterdir(), tmp]:
            _fsync(p)
        _replace(tmp, dst)
        _fsync(dst.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FtxIOError(f"{dst}: writing the folder failed: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_free(dst: Path, force: bool) -> None:
    """Fails early, before any work, when ``staged_folder`` would refuse ``dst``."""
    if dst.exists() and not force:
        raise ConfigError(f"{dst} already exists; --force (force=True) replaces it")


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def _replace(tmp: Path, dst: Path) -> None:
    """Moves the finished folder into place; an old ``dst`` is removed only after that."""
    if not dst.exists():
        tmp.rename(dst)
        return
    old = dst.with_name(f".{dst.name}.{os.getpid()}.old")
    dst.rename(old)
    try:
        tmp.rename(dst)
    except OSError:
        old.rename(dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

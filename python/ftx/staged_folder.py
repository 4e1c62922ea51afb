"""Output folders written in full beside their destination, then renamed into place.

A reader sees either the old folder or the complete new one, never a half-written one: every
file is fsynced before the rename makes the folder visible, and the parent folder after it.
A crash leaves at most a hidden ``.NAME.*.partial`` folder, which no reader takes for output.
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
from ftx.files import fsync_path


def check_free(dst: Path, force: bool = False) -> None:
    """Fails early, before any work, when ``staged_folder`` would refuse ``dst``: ftx writes
    into a new or empty folder, and replaces anything else only when forced."""
    if force or not dst.exists() or (dst.is_dir() and not any(dst.iterdir())):
        return
    raise ConfigError(
        f"{dst} already exists and is not a new or empty folder; ftx never overwrites unless "
        "forced (--force, force=True)"
    )


@contextmanager
def staged_folder(dst: Path, force: bool = False) -> Iterator[Path]:
    """Yields an empty folder to fill; on a normal exit it replaces ``dst``.

    On an error or an interrupt the staging folder is removed and ``dst`` is left as it was.
    """
    check_free(dst, force)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    except OSError as e:
        raise FtxIOError(f"{dst}: cannot write ({e.strerror or e})") from e
    try:
        # mkdtemp's folder is private (0700); the output gets what mkdir would give it.
        umask = os.umask(0)
        os.umask(umask)
        stage.chmod(0o777 & ~umask)
        yield stage
        for f in stage.rglob("*"):
            if f.is_file():
                fsync_path(f)
        fsync_path(stage)
        _replace(stage, dst)
        fsync_path(dst.parent)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise FtxIOError(f"{dst}: cannot write ({e.strerror or e})") from e
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def _replace(stage: Path, dst: Path) -> None:
    """Moves the finished folder into place; an old ``dst`` is removed only after that.

    An empty ``dst`` is replaced by the rename itself, which POSIX allows."""
    if not dst.exists() or (dst.is_dir() and not any(dst.iterdir())):
        os.rename(stage, dst)
        return
    old = dst.with_name(f".{dst.name}.{os.getpid()}.old")
    dst.rename(old)
    try:
        stage.rename(dst)
    except OSError:
        old.rename(dst)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()

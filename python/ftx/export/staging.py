"""Atomic output folders: everything is written into a hidden staging folder next to the target,
fsynced, and renamed into place, so a crash or Ctrl-C never leaves a half-written model."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftx.errors import ConfigError, FtxIOError
from ftx.tuner.files import fsync_path


def check_new_folder(out: Path, key: str = "out") -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{key} = {out}: must be a new or empty folder (ftx never overwrites)")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yields an empty staging folder; when the block succeeds, its files are fsynced and the
    folder is renamed to ``out`` (an empty ``out`` is replaced, which POSIX rename allows)."""
    check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    # mkdtemp makes a private folder; the result gets the permissions mkdir would give it.
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)
    try:
        yield stage
        for f in stage.rglob("*"):
            if f.is_file():
                fsync_path(f)
        fsync_path(stage)
        os.rename(stage, out)
        fsync_path(out.parent)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise FtxIOError(f"{out}: cannot write ({e.strerror or e})") from e
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise

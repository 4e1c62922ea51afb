"""Atomic files and folders: a reader sees the old version or the new one, never a part.

Each write goes to a temporary name in the same folder, is fsynced, renamed over the final name
(atomic on POSIX), and the folder is fsynced so the rename itself survives a power cut. Write
failures (disk full, read-only folder) become ``FtxIOError`` naming the path and the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ftx.errors import FtxIOError

TEMP_PREFIX = ".tmp-"


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temp)`` fills a temporary file that then replaces ``path``. The temporary name is
    unique, so two writers never fill one file, and keeps ``path``'s suffix (MLX adds
    ``.safetensors`` to a name without it)."""
    try:
        fd, name = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}{path.name}.", suffix=path.suffix, dir=path.parent
        )
    except OSError as e:
        raise FtxIOError(f"{path}: cannot write ({_reason(e)})") from e
    os.close(fd)
    temp = Path(name)
    try:
        write(temp)
        fsync_path(temp)
        os.replace(temp, path)
        fsync_path(path.parent)
    except (OSError, RuntimeError) as e:  # MLX raises RuntimeError on a failed write
        temp.unlink(missing_ok=True)
        raise FtxIOError(f"{path}: cannot write ({_reason(e)})") from e
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    def write(temp: Path) -> None:
        temp.write_text(text, encoding="utf-8")

    write_atomic(path, write)


def publish_folder(temp: Path, final: Path) -> None:
    """Renames the complete folder ``temp`` to ``final`` (replacing an older one)."""
    try:
        for f in temp.iterdir():
            fsync_path(f)
        fsync_path(temp)
        if final.exists():
            old = final.with_name(f"{TEMP_PREFIX}old-{final.name}")
            os.replace(final, old)
            os.replace(temp, final)
            shutil.rmtree(old)
        else:
            os.replace(temp, final)
        fsync_path(final.parent)
    except OSError as e:
        shutil.rmtree(temp, ignore_errors=True)
        raise FtxIOError(f"{final}: cannot write ({_reason(e)})") from e


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)

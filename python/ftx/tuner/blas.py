"""The BLAS behind MLX's CPU matmuls, chosen before MLX is imported.

The ``mlx[cpu]`` wheel for Linux links a bundled reference BLAS (a few GFLOP/s). Loading a
system OpenBLAS with ``RTLD_GLOBAL`` before MLX puts its ``cblas_*`` symbols first in the global
lookup scope, so ``libmlx.so`` binds to them when it loads: no ``LD_PRELOAD`` and no re-exec.
This only works while MLX is not imported yet (Python loads extensions with ``RTLD_NOW``).
Set ``FTX_BLAS=bundled`` to keep the bundled one, or ``FTX_BLAS=/path/libopenblas.so`` to pick.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Debian/Ubuntu (libopenblas0 / libopenblas0-pthread), Fedora, then the linker's search.
CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)


@dataclass(frozen=True)
class Blas:
    """Which BLAS MLX computes with: ``name`` and, for a loaded library, its ``path``."""

    name: str
    path: str | None = None
    note: str = ""

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.name}{where}{'; ' + self.note if self.note else ''}"


_chosen: Blas | None = None


class _DlInfo(ctypes.Structure):
    _fields_ = (
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    )


def global_sgemm() -> str | None:
    """The library whose ``cblas_sgemm`` the global scope resolves to (what a library loaded
    now binds to), or None when no global library has one (MLX then uses its bundled BLAS)."""
    process = ctypes.CDLL(None)
    try:
        fn = process.cblas_sgemm
    except AttributeError:
        return None
    info = _DlInfo()
    if not process.dladdr(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(info)):
        return None
    return info.dli_fname.decode() if info.dli_fname else None


def _candidates() -> list[str]:
    found = ctypes.util.find_library("openblas")
    return [p for p in (*CANDIDATES, found) if p and (not p.startswith("/") or Path(p).exists())]


def use_fast_blas() -> Blas:
    """Loads OpenBLAS for MLX if this is Linux, one is installed and MLX is not loaded yet.
    Idempotent; returns what MLX will use."""
    global _chosen
    if _chosen is not None:
        return _chosen
    if sys.platform == "darwin":
        _chosen = Blas("accelerate")
        return _chosen
    if sys.platform != "linux":
        _chosen = Blas("bundled")
        return _chosen
    if "mlx.core" in sys.modules:
        # Too late to choose, and the global scope does not say what MLX bound to back then.
        return Blas("unknown", global_sgemm(), note="MLX was imported before ftx chose a BLAS")
    if path := global_sgemm():
        _chosen = Blas(_name(path), path, note="already loaded (LD_PRELOAD)")
        return _chosen
    wish = os.environ.get("FTX_BLAS", "")
    if wish == "bundled":
        _chosen = Blas("bundled", note="FTX_BLAS=bundled")
        return _chosen
    for path in [wish] if wish else _candidates():
        try:
            ctypes.CDLL(path, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
        except OSError:
            continue
        loaded = global_sgemm()
        if loaded is not None:
            _chosen = Blas(_name(loaded), loaded)
            return _chosen
    _chosen = Blas(
        "bundled", note="slow reference BLAS; install OpenBLAS (apt install libopenblas0)"
    )
    return _chosen


def blas_threads(blas: Blas, threads: int | None) -> int | None:
    """Sets the threads one BLAS call may use (``None``: leaves them) and returns how many it
    used before; ``None`` where ftx cannot tell or set them. OpenBLAS only: the bundled BLAS
    is single-threaded, and others (Accelerate, MKL) are left to their own settings."""
    if blas.name != "openblas" or blas.path is None:
        return None
    lib = ctypes.CDLL(blas.path)
    before = int(lib.openblas_get_num_threads())
    if threads is not None:
        lib.openblas_set_num_threads(threads)
    return before


def _name(path: str) -> str:
    return "openblas" if "openblas" in Path(path).name.lower() else Path(path).name

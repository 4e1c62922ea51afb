"""The BLAS behind MLX's CPU matmuls, chosen before MLX is imported.

The ``mlx[cpu]`` wheel for Linux links a bundled reference BLAS (2 to 6 GFLOP/s on a laptop
core). ``libmlx.so`` imports only ``cblas_sgemm``, ``cblas_dgemm`` and ``cblas_cgemm`` from it,
and the dynamic linker resolves them in the global scope first: whatever library offers those
names globally when MLX loads computes its GEMMs. No ``LD_PRELOAD``, no re-exec; it only works
while MLX is not imported yet (Python loads extensions with ``RTLD_NOW``).

Where the optimized library comes from, in order:

1. **packaged**: PyPI's ``scipy-openblas32`` (a dependency of ``ftx[train]`` on Linux; the
   OpenBLAS build that NumPy and SciPy ship, x86_64 and aarch64). It exports its functions only
   as ``scipy_cblas_*``, so ftx binds the plain names of its own extension (``ftx._core``) to
   them and makes the extension's symbols global.
2. **system**: an OpenBLAS from the distribution (``apt install libopenblas0``), loaded global.
   Second because the packaged one measured as fast or faster (``benches/test_blas.py``).
3. **bundled**: MLX's own reference BLAS, with the command that fixes it.

``FTX_BLAS`` overrides: ``packaged``, ``system``, ``bundled`` or a library path. A BLAS already
global (``LD_PRELOAD``) is taken as it is. macOS uses Accelerate, linked into MLX itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Debian/Ubuntu (libopenblas0 / libopenblas0-pthread), Fedora, then the linker's search.
SYSTEM_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)
PACKAGE = "scipy-openblas32"
PREFIX = "scipy_"  # how scipy-openblas32 names its symbols
GEMMS = ("cblas_sgemm", "cblas_dgemm", "cblas_cgemm")
FIX = f'pip install "{PACKAGE}" (it comes with ftx[train]), or apt install libopenblas0'


@dataclass(frozen=True)
class Blas:
    """Which BLAS MLX computes with.

    ``name``: openblas, accelerate, bundled, unknown or the library's file name; ``source``:
    where it came from (``PyPI scipy-openblas32 0.3.34``, ``system``, ``LD_PRELOAD``,
    ``FTX_BLAS``, ``mlx wheel``); ``path``: the library file whose GEMM runs; ``prefix``: the
    prefix of its symbol names; ``config``: what the library says of itself (OpenBLAS: version
    and the CPU kernel it picked); ``note``: why, where it is not the fast path."""

    name: str
    source: str
    path: str | None = None
    prefix: str = ""
    config: str = ""
    note: str = ""

    @property
    def fast(self) -> bool:
        return self.name not in ("bundled", "unknown")

    def describe(self) -> str:
        what = self.config or self.name
        where = f", {self.path}" if self.path else ""
        return f"{what} ({self.source}{where}){'; ' + self.note if self.note else ''}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "source": self.source,
            "path": self.path,
            "config": self.config,
            "note": self.note,
        }


_chosen: Blas | None = None


class _DlInfo(ctypes.Structure):
    _fields_ = (
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    )


def library_of(address: int) -> str | None:
    """The file of the loaded library that holds this code address."""
    info = _DlInfo()
    if not address or not ctypes.CDLL(None).dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
        return None
    return info.dli_fname.decode() if info.dli_fname else None


def global_sgemm() -> str | None:
    """The library whose ``cblas_sgemm`` the global scope resolves to (what a library loaded
    now binds to), or None when no global library has one (MLX then uses its bundled BLAS)."""
    try:
        fn = ctypes.CDLL(None).cblas_sgemm
    except AttributeError:
        return None
    return library_of(ctypes.cast(fn, ctypes.c_void_p).value or 0)


def gemm_library() -> str | None:
    """The library that really computes a GEMM called by its plain name now: the global
    ``cblas_sgemm``'s, or, where that is ftx's forwarding extension, the library it forwards to."""
    from ftx import _core

    path = global_sgemm()
    if path is not None and Path(path).resolve() == Path(_core.__file__).resolve():
        return library_of(_core.blas_target())
    return path


def packaged_library() -> Path | None:
    """``libscipy_openblas*.so`` of the installed ``scipy-openblas32`` (found, not imported)."""
    spec = importlib.util.find_spec(PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted((Path(folder) / "lib").glob("libscipy_openblas*.so*"))
        if found:
            return found[0]
    return None


def system_libraries() -> list[str]:
    found = ctypes.util.find_library("openblas")
    paths = [p for p in (*SYSTEM_CANDIDATES, found) if p]
    return [p for p in dict.fromkeys(paths) if not p.startswith("/") or Path(p).exists()]


def use_fast_blas() -> Blas:
    """Binds MLX to the fastest BLAS available if this is Linux and MLX is not loaded yet.
    Idempotent; returns what MLX will use."""
    global _chosen
    if _chosen is None:
        _chosen = _choose()
    return _chosen


def _choose() -> Blas:
    if sys.platform == "darwin":
        return Blas("accelerate", "macOS, linked into MLX")
    if sys.platform != "linux":
        return Blas("bundled", "mlx wheel", note="ftx chooses a BLAS on Linux only")
    if "mlx.core" in sys.modules:
        # Too late to choose, and the global scope does not say what MLX bound to back then.
        return Blas("unknown", "MLX imported first", gemm_library(), note="import ftx before MLX")
    if path := global_sgemm():
        return _describe(Blas(_name(path), "LD_PRELOAD", path))
    wish = os.environ.get("FTX_BLAS", "")
    if wish == "bundled":
        return Blas("bundled", "mlx wheel", note="FTX_BLAS=bundled")
    tries: list[tuple[str, str]] = []  # (source, path) in order of preference
    packaged = packaged_library()
    if wish in ("", "packaged") and packaged is not None:
        tries.append((f"PyPI {PACKAGE} {importlib.metadata.version(PACKAGE)}", str(packaged)))
    if wish in ("", "system"):
        tries += [("system", p) for p in system_libraries()]
    if wish not in ("", "packaged", "system"):
        tries.append(("FTX_BLAS", wish))
    failures = []
    for source, path in tries:
        try:
            blas = _bind(source, path)
        except OSError as e:
            failures.append(f"{path}: {e}")
            continue
        if blas is not None:
            return _describe(blas)
        failures.append(f"{path}: no cblas_sgemm")
    if wish:
        note = f"FTX_BLAS={wish} could not be loaded ({'; '.join(failures) or 'not installed'})"
    else:
        note = f"slow reference BLAS; {FIX}"
    return Blas("bundled", "mlx wheel", note=note)


def _bind(source: str, path: str) -> Blas | None:
    """Makes the library's GEMMs the global ones; None if it has none."""
    if source.startswith("PyPI") or Path(path).name.startswith("libscipy_openblas"):
        from ftx import _core

        lib = ctypes.CDLL(path)  # local: only ftx's forwarders become global
        try:
            addresses = [
                ctypes.cast(getattr(lib, PREFIX + g), ctypes.c_void_p).value for g in GEMMS
            ]
        except AttributeError:
            return None
        _core.bind_blas(*[a or 0 for a in addresses])
        ctypes.CDLL(_core.__file__, mode=os.RTLD_GLOBAL | os.RTLD_NOW | os.RTLD_NOLOAD)
        return Blas("openblas", source, library_of(_core.blas_target()) or path, PREFIX)
    ctypes.CDLL(path, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    loaded = global_sgemm()
    return None if loaded is None else Blas(_name(loaded), source, loaded)


def _describe(blas: Blas) -> Blas:
    """Adds what an OpenBLAS says of itself (version, the CPU kernel it chose)."""
    if blas.name != "openblas" or blas.path is None:
        return blas
    get_config = getattr(ctypes.CDLL(blas.path), f"{blas.prefix}openblas_get_config", None)
    if get_config is None:
        return blas
    get_config.restype = ctypes.c_char_p
    words = (get_config() or b"").decode(errors="replace").split()
    # "OpenBLAS 0.3.34 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64": name, version, kernel
    kernel = next((w for w in reversed(words) if "=" not in w and w.isalnum()), "")
    config = " ".join(words[:2]) + (f" {kernel}" if kernel and kernel not in words[:2] else "")
    return Blas(blas.name, blas.source, blas.path, blas.prefix, config, blas.note)


def blas_threads(blas: Blas, threads: int | None) -> int | None:
    """Sets the threads one BLAS call may use (``None``: leaves them) and returns how many it
    used before; ``None`` where ftx cannot tell or set them. OpenBLAS only: the bundled BLAS
    is single-threaded, and others (Accelerate, MKL) are left to their own settings."""
    if blas.name != "openblas" or blas.path is None:
        return None
    lib = ctypes.CDLL(blas.path)
    before = int(getattr(lib, f"{blas.prefix}openblas_get_num_threads")())
    if threads is not None:
        getattr(lib, f"{blas.prefix}openblas_set_num_threads")(threads)
    return before


def _name(path: str) -> str:
    return "openblas" if "openblas" in Path(path).name.lower() else Path(path).name

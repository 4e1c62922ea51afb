"""``ftx doctor``: what ftx will compute on here, and the command that fixes each problem.

Works where MLX is not installed (it says so); what it measures on MLX is in ``measure``, imported
only where MLX is there.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftx.runtime.blas import FIX, Blas, use_fast_blas
from ftx.runtime.streams import choose_streams, cores

PACKAGES = ("ftx", "mlx", "mlx-lm", "tokenizers", "scipy-openblas32")
# Below these, training the quickstart model (or converting one) is likely to fail.
LOW_MEMORY = 2 << 30
LOW_DISK = 5 << 30
# The batch size of train's default config, for the stream plan shown here.
DEFAULT_BATCH = 4


@dataclass(frozen=True)
class Problem:
    """Something that makes ftx slow or fail here, and the command that fixes it."""

    what: str
    fix: str


@dataclass
class Doctor:
    versions: dict[str, str | None]
    python: str
    platform: str
    device: str
    device_memory: int | None
    blas: dict[str, str | None]
    gemm_gflops: float | None
    cores: int
    streams: str
    memory_available: int | None
    disk_free: dict[str, int]
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _memory_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return None


def _device(problems: list[Problem]) -> tuple[str, int | None]:
    """MLX's default device and its memory (None where MLX does not say)."""
    from ftx.runtime import measure

    if measure.on_cpu():
        if sys.platform == "linux" and shutil.which("nvidia-smi"):
            problems.append(
                Problem("an NVIDIA GPU is here but MLX runs on the CPU", 'pip install "ftx[cuda]"')
            )
        return "cpu", _memory_available()
    name = "metal" if sys.platform == "darwin" else "cuda"
    return name, measure.device_memory()


def diagnose(gemm_seconds: float = 1.0) -> Doctor:
    """Everything ``ftx doctor`` shows, as data."""
    problems: list[Problem] = []
    blas: Blas = use_fast_blas()
    versions = {p: _version(p) for p in PACKAGES}
    if versions["mlx"] is None or versions["mlx-lm"] is None:
        problems.append(
            Problem(
                "MLX is not installed: ftx can prepare data but not train",
                'pip install "ftx[train]"',
            )
        )
        device, device_memory, gflops = "none", None, None
    else:
        device, device_memory = _device(problems)
        from ftx.runtime.measure import gemm_gflops

        gflops = gemm_gflops(gemm_seconds) if sys.platform != "darwin" or device == "cpu" else None
    if sys.platform == "linux" and not blas.fast:
        problems.append(Problem(f"MLX's CPU matmuls use {blas.describe()}", FIX))
    n_cores = cores()
    plan = choose_streams("auto", DEFAULT_BATCH, n_cores, device not in ("cpu", "none"), blas)
    memory = _memory_available()
    if memory is not None and memory < LOW_MEMORY:
        problems.append(
            Problem(
                f"only {memory / 2**30:.1f} GiB of memory is free",
                "close other programs, or train with --quantize 4",
            )
        )
    disk = {}
    from ftx.default_model import cache_dir

    for name, path in (("working directory", Path.cwd()), ("cache", cache_dir())):
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        disk[name] = shutil.disk_usage(existing).free
        if disk[name] < LOW_DISK:
            problems.append(
                Problem(
                    f"only {disk[name] / 2**30:.1f} GiB free on the {name} ({existing})",
                    f"free space on {existing}",
                )
            )
    return Doctor(
        versions=versions,
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        device=device,
        device_memory=device_memory,
        blas=blas.as_dict() | {"describe": blas.describe()},
        gemm_gflops=gflops,
        cores=n_cores,
        streams=plan.describe(),
        memory_available=memory,
        disk_free=disk,
        problems=problems,
    )

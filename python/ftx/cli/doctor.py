"""``ftx doctor``: versions, device, BLAS and its speed, cores, memory and disk, and fixes."""

from __future__ import annotations

from typing import Any

import click

from ftx.cli._common import common_options, guarded, print_json
from ftx.report import out_console


def _size(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.1f} GiB"


@click.command("doctor")
@common_options
def command(as_json: bool, quiet: bool, debug: bool) -> None:
    """What ftx computes on here, and the exact command that fixes each problem found.

    Shows the versions of ftx, Python, MLX, mlx-lm and tokenizers; MLX's device and its memory;
    the BLAS MLX's CPU matmuls are bound to, where it came from, and its float32 GEMM speed
    (measured in about a second); the cores and the CPU stream plan; free memory and disk.
    """
    from ftx.runtime.doctor import diagnose

    d = guarded(debug, diagnose)
    if as_json:
        print_json(d.as_dict())
        return
    if quiet:
        return
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in d.versions.items())
    gemm = "not measured" if d.gemm_gflops is None else f"{d.gemm_gflops:,.1f} GFLOP/s float32 GEMM"
    rows: list[tuple[str, Any]] = [
        ("versions", f"{versions}; Python {d.python}"),
        ("platform", d.platform),
        ("device", f"{d.device} ({_size(d.device_memory)})"),
        ("blas", f"{d.blas['describe']}: {gemm}"),
        ("cores", f"{d.cores}; {d.streams}"),
        ("memory free", _size(d.memory_available)),
        ("disk free", ", ".join(f"{k} {_size(v)}" for k, v in d.disk_free.items())),
    ]
    for key, value in rows:
        out_console.print(f"[bold]{key:<12}[/] {value}", highlight=False, soft_wrap=True)
    if not d.problems:
        out_console.print("[green]no problems found[/]")
    for p in d.problems:
        out_console.print(f"[yellow]problem[/]: {p.what}\n  fix: {p.fix}", highlight=False)

"""The BLAS MLX computes with, as a user gets it from pip alone: the dynamic linker's own record
(``LD_DEBUG=bindings``) of where ``libmlx.so``'s ``cblas_sgemm`` went, in a fresh process, with
the system's BLAS libraries hidden as on a fresh machine and without hiding them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftx import _core
from ftx.runtime.blas import packaged_library, system_libraries

pytest.importorskip("mlx")

ROOT = Path(__file__).resolve().parents[2]
HIDE = ROOT.parent / "shared" / "tools" / "no-system-blas.sh"

PROBE = """
import json
from ftx.runtime.blas import blas_threads, gemm_library, use_fast_blas
blas = use_fast_blas()
import mlx.core as mx
a = mx.arange(64 * 64, dtype=mx.float32).reshape(64, 64) / 4096
with mx.stream(mx.cpu):
    ok = bool(mx.allclose(a @ a, mx.array((a.astype(mx.float64) @ a.astype(mx.float64)).tolist(),
                                          dtype=mx.float32), rtol=1e-5).item())
threads = blas_threads(blas, 1)
print(json.dumps({"blas": blas.as_dict(), "gemm_library": gemm_library(), "ok": ok,
                  "threads_before": threads, "threads_now": blas_threads(blas, None)}))
"""


def _can_hide() -> bool:
    return (
        sys.platform == "linux"
        and HIDE.exists()
        and shutil.which("unshare") is not None
        and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
    )


def _probe(env: dict[str, str], hide: bool) -> tuple[dict[str, object], str]:
    """Runs PROBE; returns its report and the library ``libmlx.so``'s ``cblas_sgemm`` bound to."""
    cmd = [sys.executable, "-c", PROBE]
    if hide:
        cmd = ["bash", str(HIDE), *cmd]
    env = {k: v for k, v in os.environ.items() if k not in ("FTX_BLAS", "LD_PRELOAD")} | env
    out = subprocess.run(cmd, capture_output=True, text=True, env=env | {"LD_DEBUG": "bindings"})
    assert out.returncode == 0, out.stderr[-3000:]
    bound = re.findall(
        r"binding file \S*libmlx\.so\S* \[\d+\] to (\S+) \[\d+\]: normal symbol "
        r"`cblas_sgemm'",
        out.stderr,
    )
    assert len(bound) == 1, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), bound[0]


def _same(a: object, b: object) -> bool:
    return (
        isinstance(a, str) and isinstance(b, str | Path) and Path(a).resolve() == Path(b).resolve()
    )


@pytest.mark.skipif(sys.platform != "linux", reason="ftx binds a BLAS on Linux only")
@pytest.mark.parametrize("hide", [True, False], ids=["fresh-machine", "as-installed"])
def test_mlx_gemm_runs_in_the_packaged_openblas(hide: bool) -> None:
    if hide and not _can_hide():
        pytest.skip("no mount namespace here to hide the system BLAS")
    packaged = packaged_library()
    assert packaged is not None, "scipy-openblas32 is a dependency of ftx[train] on Linux"
    report, bound = _probe({}, hide)
    # MLX's symbol goes to ftx's forwarder, which calls into the PyPI library.
    assert _same(bound, _core.__file__), bound
    assert _same(report["gemm_library"], packaged)
    blas = report["blas"]
    assert isinstance(blas, dict)
    assert blas["name"] == "openblas" and str(blas["source"]).startswith("PyPI scipy-openblas32")
    assert str(blas["config"]).startswith("OpenBLAS 0.3.")
    assert report["ok"]
    # ftx sets the library's threads (the CPU streams need one each) and reads them back.
    assert report["threads_now"] == 1


@pytest.mark.skipif(sys.platform != "linux", reason="ftx binds a BLAS on Linux only")
def test_bundled_when_asked_and_the_binding_shows_it() -> None:
    # The negative control: the same probe sees MLX's own reference BLAS when ftx binds none.
    report, bound = _probe({"FTX_BLAS": "bundled"}, hide=False)
    assert "mlx_cpu.libs" in bound and "libblas" in Path(bound).name, bound
    assert report["blas"] == {
        "name": "bundled",
        "source": "mlx wheel",
        "path": None,
        "config": "",
        "note": "FTX_BLAS=bundled",
    }
    assert report["ok"] and report["threads_before"] is None


def _loadable_system_library() -> bool:
    """A system OpenBLAS that loads (hidden ones are there as empty files)."""
    code = "import ctypes, sys; [ctypes.CDLL(p) for p in sys.argv[1:]]"
    return any(
        subprocess.run([sys.executable, "-c", code, p], capture_output=True).returncode == 0
        for p in system_libraries()
    )


@pytest.mark.skipif(not _loadable_system_library(), reason="no system OpenBLAS on this machine")
def test_a_system_openblas_when_asked() -> None:
    report, bound = _probe({"FTX_BLAS": "system"}, hide=False)
    assert any(_same(bound, p) for p in system_libraries() if p.startswith("/")), bound
    assert report["blas"]["source"] == "system"  # type: ignore[index]


@pytest.mark.skipif(sys.platform != "linux", reason="ftx binds a BLAS on Linux only")
def test_an_unloadable_choice_says_why_and_falls_back() -> None:
    report, bound = _probe({"FTX_BLAS": "/nonexistent/libopenblas.so"}, hide=False)
    assert "mlx_cpu.libs" in bound
    note = report["blas"]["note"]  # type: ignore[index]
    assert "FTX_BLAS=/nonexistent/libopenblas.so could not be loaded" in str(note)

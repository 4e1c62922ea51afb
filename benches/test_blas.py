"""float32 GEMM of MLX's CPU device with each BLAS it can be bound to, side by side in one run:
the reference BLAS bundled in the mlx-cpu wheel, the PyPI OpenBLAS that ftx[train] brings
(scipy-openblas32, bound by ftx), and a system OpenBLAS where one is installed. Each runs in a
fresh process (the binding is made before MLX loads), with the library's default threads.
The order ftx prefers (packaged, then system) is this measurement's.
Run: pytest benches/test_blas.py -s   (about half a minute)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from _corpus import CACHE

from ftx.runtime.blas import packaged_library, system_libraries

pytest.importorskip("mlx")

SECONDS = 4.0
SIZES = (512, 1024, 2048)
PROBE = """
import json, sys
from ftx.runtime.blas import use_fast_blas
from ftx.runtime.measure import gemm_gflops
blas = use_fast_blas()
print(json.dumps({"blas": blas.describe(), "name": blas.name,
                  "gflops": {n: gemm_gflops(float(sys.argv[1]), int(n))
                             for n in sys.argv[2].split(",")}}))
"""


def gemm(choice: str, seconds: float = SECONDS) -> dict[str, Any]:
    """GFLOP/s per matrix size with ``FTX_BLAS=choice``, measured in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {"FTX_BLAS": choice}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(seconds / len(SIZES)), ",".join(map(str, SIZES))],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(sys.platform != "linux", reason="ftx binds a BLAS on Linux only")
def test_gemm_bundled_vs_packaged_vs_system() -> None:
    choices = ["bundled"]
    if packaged_library() is not None:
        choices.append("packaged")
    if system_libraries():
        choices.append("system")
    # the bundled BLAS is ~50x slower: a shorter window still gives it several calls
    rows = {c: gemm(c, SECONDS / 2 if c == "bundled" else SECONDS) for c in choices}
    base = rows["bundled"]["gflops"]  # keyed by the size as a string (JSON)
    result = {
        "sizes": list(SIZES),
        "gflops": {c: r["gflops"] for c, r in rows.items()},
        "blas": {c: r["blas"] for c, r in rows.items()},
        "speedup_vs_bundled": {
            c: {n: r["gflops"][n] / base[n] for n in base} for c, r in rows.items()
        },
    }
    if "system" in rows and "packaged" in rows:
        result["packaged_vs_system"] = {
            n: rows["packaged"]["gflops"][n] / rows["system"]["gflops"][n] for n in base
        }
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "blas.json").write_text(json.dumps(result, indent=2))
    print("\n" + json.dumps(result, indent=2))
    for c in choices[1:]:
        assert rows[c]["name"] == "openblas", rows[c]

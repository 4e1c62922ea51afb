"""`ftx --help` wall time, the first thing a user feels (target: well under 0.5 s)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any


def test_help_wall_time(benchmark: Any) -> None:
    def run() -> None:
        subprocess.run([sys.executable, "-m", "ftx.cli", "--help"], capture_output=True, check=True)

    benchmark.pedantic(run, rounds=10, iterations=1)
    assert benchmark.stats.stats.median < 0.5

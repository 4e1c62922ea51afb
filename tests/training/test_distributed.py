"""Data parallel on MLX's own distributed layer: 2 ranks (ring backend, localhost) launched with
``mlx.launch`` match one process with the same global batch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ftx.training.metrics import read_metrics

pytestmark = [pytest.mark.mlx, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def launcher() -> str | None:
    return shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or shutil.which(
        "mlx.launch"
    )


def steps(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_metrics(run / "metrics.jsonl") if "event" not in r]


def test_two_ranks_match_one_process(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    import mlx.core as mx

    from ftx import train

    launch = launcher()
    if launch is None:
        pytest.skip("mlx.launch is not installed")
    # Step 1 of this data holds a one-row micro-batch: one rank runs two micro-batches, the
    # other one, and their gradients must still be summed layer by layer.
    keys = make_config(
        iters=4, batch_size=4, grad_accumulation=2, eval_every=2, report_every=1, save_every=2
    )
    single = train({**keys, "out": tmp_path / "single"})

    out = tmp_path / "ranks"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**keys, "out": out}.items()]
    done = subprocess.run(
        [
            launch,
            "-n",
            "2",
            "--backend",
            "ring",
            sys.executable,
            "-m",
            "ftx.cli",
            "train",
            *flags,
            "--json",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # rank 0 alone prints
    assert summary["ranks"] == 2
    assert summary["trained_tokens"] == single.trained_tokens  # every row once, across ranks

    a, b = steps(tmp_path / "single"), steps(out)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm"):
            if x[key] is None:
                assert y[key] is None
            else:
                assert y[key] == pytest.approx(x[key], rel=1e-5)
    one = mx.load(str(tmp_path / "single" / "adapters.safetensors"))
    two = mx.load(str(out / "adapters.safetensors"))
    assert one.keys() == two.keys()  # type: ignore[union-attr]
    for k in one:  # type: ignore[union-attr]
        want = np.array(one[k])  # type: ignore[index]
        # Sums in another order; Adam turns rounding into update noise of this relative size.
        np.testing.assert_allclose(np.array(two[k]), want, atol=1e-3 * np.abs(want).max())  # type: ignore[index]

"""Runs ``mlx_lm.lora`` (its own ``main``) with the BLAS ftx picks, recording its reports.

Usage: python _mlx_lm_lora.py REPORTS.json <mlx_lm.lora arguments>. mlx-lm's ``run`` builds its
reporting callback itself, so the recorder is put in its place; the training is mlx-lm's.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ftx.runtime.blas import use_fast_blas

use_fast_blas()

from mlx_lm import lora  # noqa: E402
from mlx_lm.tuner.callbacks import TrainingCallback  # noqa: E402


class Recorder(TrainingCallback):
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        self.reports.append({k: float(v) for k, v in train_info.items()})


if __name__ == "__main__":
    recorder = Recorder()
    lora.get_reporting_callbacks = lambda *a, **k: recorder
    out = sys.argv[1]
    sys.argv = ["mlx_lm.lora", *sys.argv[2:]]
    lora.main()
    with open(out, "w", encoding="utf-8") as f:
        json.dump(recorder.reports, f)

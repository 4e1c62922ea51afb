"""The progress bar shows steps, ETA and the latest losses."""

from __future__ import annotations

import io

from rich.console import Console

from ftx.training.metrics import ProgressBar


def test_progress_bar_shows_eta_and_latest_losses() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    with ProgressBar(10, enabled=True, console=console) as bar:
        bar({"step": 2, "train_loss": 2.5, "trained_tokens_per_s": 1234.0})
        bar({"step": 4, "val_loss": 2.25})
        bar({"event": "checkpoint", "step": 4})
        bar._progress.refresh()  # type: ignore[union-attr]
    text = out.getvalue()
    assert "4/10" in text and "eta" in text
    assert "loss 2.5000" in text and "val 2.2500" in text and "1,234 trained tok/s" in text


def test_disabled_progress_bar_prints_nothing() -> None:
    out = io.StringIO()
    with ProgressBar(10, enabled=False, console=Console(file=out)) as bar:
        bar({"step": 1, "train_loss": 1.0})
    assert out.getvalue() == ""

"""A real tiny training run that stops early, evaluated base vs adapted: the run folder every
report test reads (trained once per session, in seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_fixtures import prepared, tiny_llama

from ftx import evaluate, train

__all__ = ["prepared", "run_dir", "tiny_llama"]

HELDOUT = [
    {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]},
    {
        "messages": [
            {"role": "user", "content": "Count to three"},
            {"role": "assistant", "content": "1 2 3"},
        ]
    },
]
# Validation every 2 steps and no improvement is ever big enough (min_delta): the run stops
# early at step 6 and keeps step 2, the first validation.
BEST_STEP, STOP_STEP = 2, 6


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, prepared: Path) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    report = train(
        {
            "model": tiny_llama,
            "data": prepared,
            "out": out,
            "iters": 12,
            "batch_size": 2,
            "max_seq_length": 64,
            "learning_rate": 1e-3,
            "report_every": 1,
            "eval_every": 2,
            "patience": 2,
            "min_delta": 100.0,
        }
    )
    assert report.best_step == BEST_STEP and report.steps == STOP_STEP, report.stop_reason
    # Training writes the report, which has no evaluation yet ...
    assert report.run_report == out / "report.html" and report.warnings == ()
    assert "<p>No evaluation." in report.run_report.read_text(encoding="utf-8")
    heldout = out.parent / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(r) + "\n" for r in HELDOUT), encoding="utf-8")
    # ... and evaluating into the run folder rewrites it with the evaluation.
    result = evaluate(tiny_llama, adapter=out, data=[prepared, heldout], max_tokens=6)
    assert result.run_report == out / "report.html" and result.warnings == ()
    return out

"""Long rows within memory (issue 21): peak memory and trained tokens/s of one-row steps at long
row widths on SmolLM2-135M-Instruct (float32, CPU), side by side in one run:

- ftx with neither checkpointing nor the chunked loss
  (``--grad-checkpoint false --loss-chunk off``),
- ftx with the chunked loss (its default), with attention recomputed in chunks as well
  (``--grad-checkpoint attention``), and with checkpointed blocks (``true``),
- ftx with checkpointed blocks under a memory limit that no row fits (``--memory-limit 600MB
  --fit off``): checkpointed blocks compute attention in chunks only where the plan does not fit
  without it, so this is the plan a row gets at the edge of a budget,
- ``mlx_lm.lora --grad-checkpoint`` on the same records.

From the measured peaks, each side's peak is fitted as a + bL + cL^2 and solved for the longest
row that fits ``FTX_BENCH_BUDGET`` (default 8 GiB). Goals: ftx's least-memory plan fits at least
2x the row of ``mlx_lm.lora --grad-checkpoint`` in that budget; checkpointing costs at most 1.4x
the step time.
A side whose peak, extrapolated from its shorter rows, would not fit this machine's free memory
is not run at that width (it is reported as not fitting).

Rows: ``FTX_BENCH_ROWS`` (default 2048,8192,16384). One step at 2k takes about 1.5 minutes on
2 cores and a 16k step about half an hour, so ``FTX_BENCH_ROWS=512,1024,2048`` is what fits a
session here. Run: pytest benches/test_long_context.py -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _corpus import CACHE, SHARED

from ftx.training.memory import available_memory

pytest.importorskip("mlx_lm")

ROOT = Path(__file__).resolve().parent.parent
ROWS = [int(n) for n in os.environ.get("FTX_BENCH_ROWS", "2048,8192,16384").split(",")]
BUDGET = int(float(os.environ.get("FTX_BENCH_BUDGET", 8 * 2**30)))
# Steps per run: the first compiles; the speed is the median of the others (one step's speed
# varies by 15% on this machine, so the step-time ratios want FTX_BENCH_ITERS=4 or more). One
# is enough for peaks alone.
ITERS = int(os.environ.get("FTX_BENCH_ITERS", 2))
# Template and prompt around the reply, in tokens.
MARGIN = 64
ALL_SIDES = {
    "ftx": ["--grad-checkpoint", "false", "--loss-chunk", "off"],
    "ftx_chunked_loss": ["--grad-checkpoint", "false"],
    "ftx_recomputed_attention": ["--grad-checkpoint", "attention"],
    "ftx_checkpointed": ["--grad-checkpoint", "true"],
    "ftx_least_memory": ["--grad-checkpoint", "true", "--memory-limit", "600MB"],
    "mlx_lm_lora_grad_checkpoint": [],
}
# FTX_BENCH_SIDES=ftx_least_memory,mlx_lm_lora_grad_checkpoint: the two the longest-row goal
# compares, at rows too slow to run all four.
SIDES = {k: ALL_SIDES[k] for k in os.environ.get("FTX_BENCH_SIDES", ",".join(ALL_SIDES)).split(",")}


def _records(model: Path, width: int, out: Path) -> Path:
    """Three chat records of about ``width`` tokens each (a short question, a long answer made
    of alpaca_en_demo's answers), as train.jsonl; a short valid.jsonl for mlx-lm."""
    from tokenizers import Tokenizer

    src = SHARED / "data" / "datasets" / "llama_factory" / "alpaca_en_demo.json"
    if not src.exists():
        pytest.skip(f"{src} missing")
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    answers = [r["output"] for r in json.loads(src.read_text())]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "train.jsonl").open("w") as f:
        for k in range(3):
            ids: list[int] = []
            i = k * 97
            while len(ids) < width:
                ids += tok.encode(answers[i % len(answers)] + "\n\n", add_special_tokens=False).ids
                i += 1
            reply = tok.decode(ids[: width - MARGIN])
            msgs = [
                {"role": "user", "content": "Write down everything you know."},
                {"role": "assistant", "content": reply},
            ]
            f.write(json.dumps({"messages": msgs}) + "\n")
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    (out / "valid.jsonl").write_text(json.dumps({"messages": short}) + "\n")
    return out


def _ftx(model: Path, data: Path, width: int, run: Path, extra: list[str]) -> dict[str, Any]:
    import ftx
    from ftx.training.metrics import read_metrics

    prepared = run.with_name(run.name + "-data")
    ftx.prepare(data / "train.jsonl", out=prepared, model=model, valid=0, force=True)
    args = [
        *("--model", model, "--data", prepared, "--out", run, "--iters", ITERS),
        *("--batch-size", 1, "--max-seq-length", width, "--rank", 8, "--alpha", 16),
        *("--report-every", 1, "--save-every", ITERS, "--schedule", "constant"),
        *("--fit", "off"),
        *extra,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "ftx.cli", "train", *map(str, args), "--json", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    steps = [r for r in read_metrics(run / "metrics.jsonl") if r.get("train_loss") is not None]
    return {
        "peak_bytes": summary["peak_memory"],
        "estimate_bytes": summary["memory"]["total"],
        "trained_tok_s": _steady([r["trained_tokens_per_s"] for r in steps]),
    }


def _mlx_lm(model: Path, data: Path, width: int, out: Path) -> dict[str, Any]:
    reports = out.with_suffix(".json")
    args = [
        *("--model", model, "--train", "--data", data, "--adapter-path", out),
        *("--iters", ITERS, "--batch-size", 1, "--num-layers", -1),
        *("--max-seq-length", width, "--mask-prompt", "--grad-checkpoint"),
        *("--steps-per-report", 1, "--steps-per-eval", 100 * ITERS, "--val-batches", 0),
    ]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benches" / "_mlx_lm_lora.py"), reports, *map(str, args)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads(reports.read_text())
    return {
        "peak_bytes": int(max(r["peak_memory"] for r in steps) * 1e9),
        "trained_tok_s": _steady([r["tokens_per_second"] for r in steps]),
    }


def _steady(speeds: list[float]) -> float:
    """The median speed of the steps after the first (which compiles), or the only one."""
    return float(np.median(speeds[1:] if len(speeds) > 1 else speeds))


def _fit(widths: list[int], peaks: list[int]) -> np.ndarray:
    """a, b, c of peak = a + b L + c L^2, c >= 0 (a line through two points, or where the
    points bend down: a line fitted to them has the larger slope of the two ends)."""
    x, y = np.array(widths, float), np.array(peaks, float)
    if len(x) >= 3:
        coef = np.polyfit(x, y, 2)[::-1]
        if coef[2] >= 0:
            return np.asarray(coef)
    if len(x) < 2:
        return np.array([y[0], 0.0, 0.0])
    # The last two points: the steepest part of a concave curve, so the row is not overstated.
    slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
    return np.array([y[-1] - slope * x[-1], slope, 0.0])


def _longest(coef: np.ndarray, budget: int) -> float | None:
    """The largest L with a + bL + cL^2 <= budget (None: nothing fits, or the fit is flat)."""
    a, b, c = coef
    if abs(c) < 1e-30:
        return None if b <= 0 else (budget - a) / b
    roots = np.roots([c, b, a - budget])
    real = [r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0]
    return max(real) if real else None


def test_long_rows_in_a_memory_budget(tmp_path: Path) -> None:
    from ftx.default_model import default_model

    model = default_model(dequantize=True, cache=CACHE / "smollm2").path
    free = available_memory() or 0
    results: dict[str, dict[int, dict[str, Any]]] = {side: {} for side in SIDES}
    for width in sorted(ROWS):
        data = _records(model, width, tmp_path / f"data-{width}")
        for side, extra in SIDES.items():
            done = results[side]
            if len(done) >= 2:
                guess = float(
                    np.polyval(
                        _fit(list(done), [r["peak_bytes"] for r in done.values()])[::-1], width
                    )
                )
                if guess > 0.9 * free:
                    done[width] = {"skipped": f"extrapolated peak {guess / 2**30:.1f} GiB > free"}
                    continue
            run = tmp_path / f"{side}-{width}"
            done[width] = (
                _mlx_lm(model, data, width, run)
                if side.startswith("mlx")
                else _ftx(model, data, width, run, extra)
            )
            print(f"{side} {width}: {json.dumps(done[width])}", flush=True)

    summary: dict[str, Any] = {"budget_bytes": BUDGET, "rows": ROWS, "sides": results}
    longest: dict[str, float | None] = {}
    for side, by_width in results.items():
        measured = {w: r for w, r in by_width.items() if "peak_bytes" in r}
        if measured:
            coef = _fit(list(measured), [r["peak_bytes"] for r in measured.values()])
            longest[side] = _longest(coef, BUDGET)
    summary["longest_row_in_budget"] = longest
    peer = longest.get("mlx_lm_lora_grad_checkpoint")
    ours = longest.get("ftx_least_memory")
    summary["longest_row_ratio"] = ours / peer if ours and peer else None
    # Each way of recomputing against the same run without it (the chunked loss on in both).
    base = results.get("ftx_chunked_loss", {})
    summary["step_time_ratio"] = {
        side: {
            w: base[w]["trained_tok_s"] / r["trained_tok_s"]
            for w, r in results[side].items()
            if "trained_tok_s" in r and "trained_tok_s" in base.get(w, {})
        }
        for side in ("ftx_recomputed_attention", "ftx_checkpointed", "ftx_least_memory")
        if side in results
    }
    summary["estimate_over_peak"] = {
        side: {
            w: r["estimate_bytes"] / r["peak_bytes"] for w, r in by.items() if "estimate_bytes" in r
        }
        for side, by in results.items()
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / f"long_context-{'-'.join(map(str, ROWS))}.json").write_text(
        json.dumps(summary, indent=2)
    )
    print("\n" + json.dumps(summary, indent=2))
    assert summary["longest_row_ratio"] is not None and summary["longest_row_ratio"] >= 2.0
    assert all(r <= 1.4 for r in summary["step_time_ratio"].get("ftx_checkpointed", {}).values())

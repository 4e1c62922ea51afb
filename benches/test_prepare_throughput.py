"""`ftx prepare` against its peers on the standard corpus, side by side in one run.

Targets (issue 4): >= 0.9x the raw `encode_batch` limit, >= 2x Hugging Face `datasets.map`,
>= 5x mlx-lm's data path; peak RSS on 4x the corpus within 10% of 1x.
Run: make bench (or: pytest benches/test_prepare_throughput.py --benchmark-enable -s)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _corpus import CACHE, model_dir

RESULTS: dict[str, dict[str, dict[str, float]]] = {}
TOKENIZERS = ["llama3", "qwen3"]


def _timed(fn: Callable[[], int]) -> dict[str, float]:
    t = time.perf_counter()
    tokens = fn()
    secs = time.perf_counter() - t
    return {"tokens": tokens, "seconds": secs, "tok_per_s": tokens / secs}


def _records(corpus: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in corpus.open()]


def run_ftx(corpus: Path, model: Path, out: Path) -> dict[str, float]:
    """ftx prepare end to end as a subprocess, with its own peak RSS."""
    code = (
        "import resource, subprocess, sys, json\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "assert p.returncode == 0, p.stderr\n"
        "r = json.loads(p.stdout)\n"
        "print(json.dumps({'tokens': sum(s['tokens'] for s in r['splits'].values()),"
        " 'rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    ftx = [
        sys.executable,
        "-m",
        "ftx.cli",
        "prepare",
        str(corpus),
        "--model",
        str(model),
        "--out",
        str(out),
        "--force",
        "--json",
        "--no-dedup",
    ]
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *ftx], capture_output=True, text=True)
    secs = time.perf_counter() - t
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    return {
        "tokens": r["tokens"],
        "seconds": secs,
        "tok_per_s": r["tokens"] / secs,
        "rss_mb": r["rss_mb"],
    }


def run_limit(records: list[dict[str, Any]], model: Path) -> dict[str, float]:
    """`tokenizers.encode_batch` on the already-rendered strings: the speed of the tokenizer."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(str(model))
    texts = [hf.apply_chat_template(r["messages"], tokenize=False) for r in records]
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    return _timed(
        lambda: sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    )


def run_datasets(corpus: Path, model: Path) -> dict[str, float]:
    """Hugging Face `datasets.map` with `apply_chat_template` on every core."""
    from datasets import disable_caching, load_dataset

    disable_caching()
    ds = load_dataset("json", data_files=str(corpus), split="train")
    path = str(model)

    def fn(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        from transformers import PreTrainedTokenizerFast

        tok = _TOK.setdefault(path, PreTrainedTokenizerFast.from_pretrained(path))
        ids = [tok.apply_chat_template(m, tokenize=True) for m in batch["messages"]]
        return {"input_ids": ids}

    def work() -> int:
        out = ds.map(fn, batched=True, num_proc=os.cpu_count(), remove_columns=ds.column_names)
        return sum(len(x) for x in out["input_ids"])

    return _timed(work)


_TOK: dict[str, Any] = {}


def run_mlx_lm(records: list[dict[str, Any]], model: Path) -> dict[str, float]:
    """mlx-lm's own data path: `ChatDataset` with `mask_prompt`, forced over every record."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from mlx_lm.tuner.datasets import ChatDataset

    tok = load_tokenizer(model)
    ds = ChatDataset(records, tok, chat_key="messages", mask_prompt=True)
    return _timed(lambda: sum(len(ds.process(ds._data[i])[0]) for i in range(len(records))))


@pytest.mark.parametrize("name", TOKENIZERS)
def test_prepare_against_peers(benchmark: Any, corpus: Path, name: str) -> None:
    model = model_dir(name)
    records = _records(corpus)
    res = {
        "ftx": run_ftx(corpus, model, CACHE / f"out-{name}"),
        "limit": run_limit(records, model),
        "datasets": run_datasets(corpus, model),
        "mlx_lm": run_mlx_lm(records, model),
    }
    RESULTS[name] = res
    benchmark.extra_info.update(res)
    benchmark.pedantic(lambda: None, rounds=1)
    f = res["ftx"]["tok_per_s"]
    print(
        f"\n[{name}] tokens/s: " + ", ".join(f"{k} {v['tok_per_s']:,.0f}" for k, v in res.items())
    )
    print(
        f"[{name}] ftx / limit {f / res['limit']['tok_per_s']:.2f}x (target >= 0.9), "
        f"ftx / datasets {f / res['datasets']['tok_per_s']:.2f}x (target >= 2), "
        f"ftx / mlx-lm {f / res['mlx_lm']['tok_per_s']:.2f}x (target >= 5)"
    )


def test_peak_rss_does_not_grow_with_input(benchmark: Any, corpus: Path, corpus_4x: Path) -> None:
    model = model_dir("llama3")
    one = run_ftx(corpus, model, CACHE / "rss-1x")
    four = run_ftx(corpus_4x, model, CACHE / "rss-4x")
    ratio = four["rss_mb"] / one["rss_mb"]
    benchmark.extra_info.update({"rss_1x_mb": one["rss_mb"], "rss_4x_mb": four["rss_mb"]})
    benchmark.pedantic(lambda: None, rounds=1)
    print(
        f"\npeak RSS 1x {one['rss_mb']:.0f} MB, 4x {four['rss_mb']:.0f} MB: {ratio:.2f}x "
        "(target <= 1.10)"
    )

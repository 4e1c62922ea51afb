"""The standard chat corpus and tokenizer folders for the benchmarks, built once and cached."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CACHE = ROOT / ".benchmarks" / "data"


def build_corpus() -> Path:
    """The 75,000-record corpus the issues' peer figures were measured on."""
    out = CACHE / "chat_corpus.jsonl"
    if not out.exists():
        if not (SHARED / "tools" / "build_chat_corpus.py").exists():
            pytest.skip("../shared is not beside this checkout")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(SHARED / "tools" / "build_chat_corpus.py"), "--out", str(out)],
            check=True,
        )
    return out


def build_corpus_4x(corpus: Path) -> Path:
    """Four distinct copies of the corpus (each copy's records edited), for the memory check."""
    out = CACHE / "chat_corpus_4x.jsonl"
    if not out.exists():
        with out.open("w") as f:
            for k in range(4):
                for line in corpus.open():
                    rec = json.loads(line)
                    rec["messages"][-1]["content"] += f" [copy {k}]"
                    f.write(json.dumps(rec) + "\n")
    return out


def model_dir(name: str) -> Path:
    """A model folder with a plain tokenizer.json (peers cannot read the shared .gz)."""
    src = SHARED / "data" / "tokenizers" / name
    dst = CACHE / "models" / name
    if not (dst / "tokenizer.json").exists():
        if not src.exists():
            pytest.skip(f"{src} missing")
        dst.mkdir(parents=True, exist_ok=True)
        with gzip.open(src / "tokenizer.json.gz") as g, (dst / "tokenizer.json").open("wb") as f:
            shutil.copyfileobj(g, f)
        shutil.copy(src / "tokenizer_config.json", dst / "tokenizer_config.json")
    return dst

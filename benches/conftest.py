"""Benchmark fixtures (the data they use is built once by ``_corpus``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _corpus import build_corpus, build_corpus_4x


@pytest.fixture(scope="session")
def corpus() -> Path:
    return build_corpus()


@pytest.fixture(scope="session")
def corpus_4x(corpus: Path) -> Path:
    return build_corpus_4x(corpus)

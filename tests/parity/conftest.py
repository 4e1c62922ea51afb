"""The parity checks live in tools/parity/ (shared with the report); load them once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from parity_checks import load


@pytest.fixture(scope="session")
def parity(shared: Path) -> ModuleType:
    pytest.importorskip("transformers")
    return load()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where model folders are made, once per session (tokenizers are loaded once too)."""
    yield tmp_path_factory.mktemp("parity-models")

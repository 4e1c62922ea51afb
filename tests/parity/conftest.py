"""The parity checks live in tools/parity.py (shared with the report script); load it once."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "parity.py"


@pytest.fixture(scope="session")
def parity(shared: Path) -> ModuleType:
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("ftx_parity", TOOLS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ftx_parity"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where model folders are made, once per session (tokenizers are loaded once too)."""
    yield tmp_path_factory.mktemp("parity-models")

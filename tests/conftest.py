"""Shared fixtures: paths to the real third-party data beside the repo and to the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"the shared data folder {SHARED} is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return EXAMPLES / "models" / "tiny-chatml"


@pytest.fixture(scope="session")
def example_data() -> Path:
    return EXAMPLES / "data" / "chat.jsonl"

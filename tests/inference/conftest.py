"""The tiny-model fixtures (``model_fixtures``) for the chat and generate tests, and a run
folder with adapters and its fused model."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_fixtures import tiny_llama
from tiny_models import write_lora_run

__all__ = ["fused", "lora_run", "tiny_llama"]


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return write_lora_run(tmp_path_factory.mktemp("runs") / "run", tiny_llama)


@pytest.fixture(scope="session")
def fused(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, lora_run: Path) -> Path:
    from ftx.export import fuse

    out = tmp_path_factory.mktemp("fused") / "model"
    fuse(tiny_llama, lora_run, out)
    return out

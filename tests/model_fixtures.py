"""Fixtures of the tests that train, fuse or evaluate (each folder's conftest imports them):
tiny models of real mlx-lm architectures with random weights and the example tokenizer,
prepared data, a config builder, and a run folder with adapters and its fused model.

OpenBLAS is chosen before anything imports MLX, as ``ftx train`` does, so the tests run fast.
MLX is imported only inside fixtures, so that the tests that do not need it run without it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_models import build_model, write_artifact, write_lora_run

from ftx.runtime.blas import use_fast_blas

use_fast_blas()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "llama")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return write_artifact(
        tmp_path_factory.mktemp("data") / "prepared",
        tiny_llama,
        {"train": 64, "valid": 12, "test": 8},
    )


@pytest.fixture
def make_config(tiny_llama: Path, prepared: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Config keys for a run of a few steps into a fresh run folder; keywords override."""

    def make(**over: Any) -> dict[str, Any]:
        return {
            "model": tiny_llama,
            "data": prepared,
            "out": tmp_path / "run",
            "iters": 4,
            "batch_size": 2,
            "max_seq_length": 128,
            "learning_rate": 1e-3,
            **over,
        }

    return make


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return write_lora_run(tmp_path_factory.mktemp("runs") / "run", tiny_llama)


@pytest.fixture(scope="session")
def fused(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, lora_run: Path) -> Path:
    from ftx.export import fuse

    out = tmp_path_factory.mktemp("fused") / "model"
    fuse(tiny_llama, lora_run, out)
    return out

"""``--dry-run``'s memory estimate against MLX's measured peak of the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.mlx, pytest.mark.slow]


@pytest.fixture(scope="module")
def wider(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model wide enough that activations, not constants, dominate the peak."""
    from tiny_models import build_model, write_artifact

    root = tmp_path_factory.mktemp("memory")
    model = build_model(
        root / "model",
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
    )
    return model, write_artifact(root / "data", model, {"train": 64})


@pytest.mark.parametrize(
    "over",
    [
        {"method": "lora", "batch_size": 4, "max_seq_length": 256},
        {"method": "full", "batch_size": 2, "max_seq_length": 512, "optimizer": "adamw"},
        # One long row: the attention weights (heads x L x L per block) dominate.
        {"method": "lora", "batch_size": 1, "max_seq_length": 2048},
        # Checkpointed: the blocks keep their inputs, one block its activations.
        {"method": "lora", "batch_size": 4, "max_seq_length": 256, "grad_checkpoint": True},
        {"method": "lora", "batch_size": 1, "max_seq_length": 2048, "grad_checkpoint": True},
        {"method": "full", "batch_size": 2, "max_seq_length": 512, "grad_checkpoint": True},
        # The loss in one piece: the logits of every trained position at once.
        {"method": "lora", "batch_size": 4, "max_seq_length": 256, "loss_chunk": "off"},
    ],
)
def test_estimate_is_within_a_quarter_of_the_measured_peak(
    over: dict[str, Any], wider: tuple[Path, Path], tmp_path: Path
) -> None:
    from ftx import train

    model, data = wider
    keys = {"model": model, "data": data, "out": tmp_path / "run", "iters": 2, **over}
    keys["save_every"] = None
    estimate = train(keys, dry_run=True).memory
    measured = train(keys).peak_memory
    assert 0.75 <= estimate.total / measured <= 1.25, (estimate, measured)
    assert estimate.activations > estimate.weights  # the estimate is not carried by constants
    assert estimate.fits is True

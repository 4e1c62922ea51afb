"""``--dry-run``'s memory estimate against MLX's measured peak of the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.mlx, pytest.mark.slow]


@pytest.fixture(scope="module")
def wider(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A model wide enough that activations, not constants, dominate the peak; records of 8 to
    120 tokens, and a few of about 2k."""
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
    short = write_artifact(root / "data", model, {"train": 64})
    # Rows of about 2k tokens: each block's attention weights (128 MiB) are past the threshold.
    return model, short, write_artifact(root / "long", model, {"train": 4}, lengths=(1900, 2040))


@pytest.mark.parametrize(
    "over",
    [
        {"method": "lora", "batch_size": 4, "max_seq_length": 256},
        {"method": "full", "batch_size": 2, "max_seq_length": 512, "optimizer": "adamw"},
        # One long row: the attention weights (heads x L x L per block) dominate.
        {"method": "lora", "batch_size": 1, "max_seq_length": 2048, "long": True},
        # Checkpointed: the blocks keep their inputs, one block its activations.
        {"method": "lora", "batch_size": 4, "max_seq_length": 256, "grad_checkpoint": True},
        {"method": "lora", "batch_size": 4, "max_seq_length": 256, "grad_checkpoint": 2},
        {"method": "lora", "batch_size": 1, "max_seq_length": 2048, "grad_checkpoint": True}
        | {"long": True},
        {"method": "full", "batch_size": 2, "max_seq_length": 512, "grad_checkpoint": True},
        # The loss in one piece: the logits of every trained position at once.
        {"method": "lora", "batch_size": 4, "max_seq_length": 256, "loss_chunk": "off"},
    ],
)
def test_estimate_is_within_a_quarter_of_the_measured_peak(
    over: dict[str, Any], wider: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from ftx import train

    model, short, long = wider
    over = dict(over)
    data = long if over.pop("long", False) else short
    keys = {"model": model, "data": data, "out": tmp_path / "run", "iters": 2, **over}
    keys["save_every"] = None
    estimate = train(keys, dry_run=True).memory
    measured = train(keys).peak_memory
    assert 0.75 <= estimate.total / measured <= 1.25, (estimate, measured)
    assert estimate.activations > estimate.weights  # the estimate is not carried by constants
    assert estimate.fits is True


def test_recomputed_attention_trains_the_same_in_less_memory(
    wider: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from ftx import train
    from ftx.training.metrics import read_metrics

    model, _, data = wider
    keys = {"model": model, "data": data, "iters": 2, "report_every": 1, "save_every": None}
    keys |= {"batch_size": 1, "max_seq_length": 2048, "loss_chunk": "off"}
    runs = {
        mode: train({**keys, "out": tmp_path / str(mode), "grad_checkpoint": mode})
        for mode in (False, "attention")
    }
    assert runs["attention"].memory.chunked_attention
    assert not runs[False].memory.chunked_attention
    losses = {
        mode: [
            r["train_loss"]
            for r in read_metrics(run.run_dir / "metrics.jsonl")
            if "train_loss" in r
        ]
        for mode, run in runs.items()
    }
    assert len(losses[False]) == 2
    assert losses["attention"] == pytest.approx(losses[False], rel=1e-5)
    assert runs["attention"].peak_memory < 0.6 * runs[False].peak_memory
    for run in runs.values():  # and the plan counted it
        assert 0.75 <= run.memory.total / run.peak_memory <= 1.25, (run.memory, run.peak_memory)

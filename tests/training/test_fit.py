"""The memory plan comes before any weight is read: a run that does not fit its memory is refused
with the numbers and the changes that fit, ``fit: auto`` takes one, ``grad_checkpoint: auto``
turns checkpointing on exactly when the run needs it, on as few blocks as fit, and a limit below
the weights is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftx.errors import ConfigError

pytestmark = pytest.mark.mlx

Make = Callable[..., dict[str, Any]]


def estimates(keys: dict[str, Any]) -> tuple[Any, Any]:
    """The dry-run estimates without and with checkpointing."""
    from ftx import train

    plain = train({**keys, "grad_checkpoint": False}, dry_run=True).memory
    checkpointed = train({**keys, "grad_checkpoint": True}, dry_run=True).memory
    assert checkpointed.total < plain.total
    return plain, checkpointed


@pytest.fixture(scope="module")
def deeper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Blocks enough that checkpointing saves memory, weights enough to see them load."""
    from tiny_models import build_model

    return build_model(
        tmp_path_factory.mktemp("fit") / "model",
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
    )


@pytest.fixture
def keys(make_config: Make, deeper: Path) -> dict[str, Any]:
    return make_config(model=deeper, batch_size=4, max_seq_length=256, save_every=None)


def test_auto_checkpointing_turns_on_only_when_the_run_needs_it(keys: dict[str, Any]) -> None:
    from ftx import train
    from ftx.config import read_yaml

    plain, checkpointed = estimates(keys)
    between = (plain.total + checkpointed.total) // 2
    run = train({**keys, "memory_limit": between})
    # As few of the 8 blocks as fit: one fewer would not.
    k = run.memory.checkpointed_blocks
    assert 0 < k < run.memory.trained_blocks == 8
    assert run.memory.fits is True
    fewer = {**keys, "memory_limit": between, "grad_checkpoint": k - 1 or "attention", "fit": "off"}
    assert train(fewer, dry_run=True).memory.fits is False
    assert read_yaml(run.run_dir / "config.yaml")["grad_checkpoint"] == k  # a resume does the same
    assert run.peak_memory <= 1.25 * run.memory.total
    roomy = train({**keys, "memory_limit": plain.total * 2}, dry_run=True).memory
    assert roomy.grad_checkpoint is False
    assert roomy.available == plain.total * 2


def test_auto_recomputes_the_least_that_fits(keys: dict[str, Any], tmp_path: Path) -> None:
    from tiny_models import write_artifact

    from ftx import train

    # Rows of about 1k tokens: each block's attention weights (32 MiB) are past the threshold.
    data = write_artifact(tmp_path / "long", keys["model"], {"train": 8}, lengths=(900, 1020))
    long = {**keys, "data": data, "batch_size": 1, "max_seq_length": 1024}
    plain, attention, blocks = (
        train({**long, "grad_checkpoint": mode}, dry_run=True).memory
        for mode in (False, "attention", True)
    )
    assert (attention.chunked_attention, attention.grad_checkpoint) == (True, False)
    assert blocks.total < attention.total < plain.total
    for limit, blocks_on, chunked in [
        (plain.total * 2, False, False),
        ((plain.total + attention.total) // 2, False, True),
    ]:
        chosen = train({**long, "memory_limit": limit}, dry_run=True).memory
        assert (chosen.grad_checkpoint, chosen.chunked_attention) == (blocks_on, chunked), limit
        assert chosen.fits is True
    # Past recomputed attention: as few checkpointed blocks as fit, attention whole where some
    # number of blocks fits so (chunking it as well costs more than a few blocks more).
    limit = (attention.total + blocks.total) // 2
    chosen = train({**long, "memory_limit": limit}, dry_run=True).memory
    assert chosen.fits is True and chosen.checkpointed_blocks > 0
    assert not chosen.chunked_attention
    fewer = {**long, "memory_limit": limit, "fit": "off"}
    fewer["grad_checkpoint"] = chosen.checkpointed_blocks - 1 or "attention"
    one_fewer = train(fewer, dry_run=True).memory
    assert one_fewer.fits is False or one_fewer.chunked_attention  # fits only in chunks


def test_a_run_that_does_not_fit_is_refused_with_what_would_fit(keys: dict[str, Any]) -> None:
    from ftx import train
    from ftx.training.fit import size

    _, checkpointed = estimates(keys)
    limit = int(checkpointed.total * 0.95)  # under every number of checkpointed blocks
    with pytest.raises(ConfigError) as e:
        train({**keys, "memory_limit": limit})
    message = str(e.value)
    assert f"may use {size(limit)} (memory_limit)" in message
    assert "batch_size: " in message and "grad_accumulation: " in message
    assert "--fit auto" in message
    assert not Path(keys["out"]).exists()  # refused before the run folder was made


def test_fit_auto_takes_the_first_change_that_fits(keys: dict[str, Any]) -> None:
    from ftx import train
    from ftx.config import read_yaml

    _, checkpointed = estimates(keys)
    report = train({**keys, "memory_limit": int(checkpointed.total * 0.95), "fit": "auto"})
    # Fewer rows per micro-batch, as many more micro-batches: the same rows per step.
    assert report.fit_changes == {"grad_checkpoint": True, "batch_size": 2, "grad_accumulation": 2}
    assert report.memory.fits is True
    saved = read_yaml(report.run_dir / "config.yaml")
    assert (saved["batch_size"], saved["grad_accumulation"], saved["grad_checkpoint"]) == (
        2,
        2,
        True,
    )
    assert report.peak_memory <= 1.25 * report.memory.total


def test_a_limit_below_the_weights_is_refused_before_they_load(keys: dict[str, Any]) -> None:
    import mlx.core as mx

    from ftx import train

    plain, _ = estimates(keys)
    before = mx.get_active_memory()
    with pytest.raises(ConfigError, match="the weights alone are more than") as e:
        train({**keys, "memory_limit": plain.weights // 2})
    assert "No change of batch size, checkpointing, quantization or row width fits" in str(e.value)
    assert mx.get_active_memory() - before < plain.weights / 4  # nothing was read


def test_the_plan_arrives_before_the_weights_are_read(keys: dict[str, Any]) -> None:
    import mlx.core as mx

    from ftx import train

    seen: list[tuple[dict[str, Any], int]] = []

    def on_plan(record: dict[str, Any]) -> None:
        if record.get("event") == "plan":
            seen.append((record, mx.get_active_memory()))

    mx.clear_cache()
    before = mx.get_active_memory()
    report = train(keys, callbacks=[on_plan])
    ((plan, active),) = seen
    assert plan["memory"] == report.memory.to_dict()
    assert active - before < report.memory.weights / 4


def test_mlx_is_held_to_the_plan_while_the_run_trains(keys: dict[str, Any]) -> None:
    import mlx.core as mx

    from ftx import train

    limits: list[int] = []
    before = mx.get_memory_limit()
    report = train(
        {**keys, "iters": 2, "report_every": 1},
        callbacks=[lambda r: limits.append(mx.get_memory_limit()) if "train_loss" in r else None],
    )
    assert limits == [report.memory.total] * 2
    assert mx.get_memory_limit() == before  # given back


def test_a_run_past_its_plan_raises_the_limit_and_says_so(keys: dict[str, Any]) -> None:
    import mlx.core as mx

    from ftx import train

    events: list[dict[str, Any]] = []
    limits: list[int] = []

    def under_count(record: dict[str, Any]) -> None:
        if record.get("event") == "over_plan":
            events.append(record)
        elif "train_loss" in record:
            limits.append(mx.get_memory_limit())
            if record["step"] == 1:  # as if the plan had counted far too little
                mx.set_memory_limit(1)

    train({**keys, "iters": 3, "report_every": 1}, callbacks=[under_count])
    (event,) = events
    assert event["step"] == 2 and event["planned"] == 1
    assert event["limit"] > event["peak"] > 1
    assert limits[1:] == [event["limit"]] * 2  # steps 2 and 3 ran under the raised limit


def test_the_cli_prints_the_plan_and_refuses_with_exit_2(keys: dict[str, Any]) -> None:
    flags = ["--model", str(keys["model"]), "--data", str(keys["data"]), "--iters", "1"]
    ok = subprocess.run(
        [sys.executable, "-m", "ftx.cli", "train", *flags, "--out", str(keys["out"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "memory plan: " in ok.stderr and "fits" in ok.stderr
    limited = [*flags, "--memory-limit", "1MiB", "--out", str(keys["out"]) + "2"]
    refused = subprocess.run(
        [sys.executable, "-m", "ftx.cli", "train", *limited],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "may use 1.0 MiB (memory_limit)" in refused.stderr

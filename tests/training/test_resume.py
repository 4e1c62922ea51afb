"""Long-run safety: a run killed with SIGKILL and resumed is the uninterrupted run, bit for bit;
checkpoints are whole or absent; resuming with other data or config is refused."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftx.errors import ConfigError, FtxIOError
from ftx.training.metrics import read_metrics

pytestmark = pytest.mark.mlx

REPO = Path(__file__).resolve().parents[2]
# Wall-clock fields: everything else in a step's line must repeat exactly.
TIMING = {"trained_tokens_per_s", "processed_tokens_per_s", "peak_memory", "elapsed"}


def steps_of(run: Path) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if k not in TIMING}
        for r in read_metrics(run / "metrics.jsonl")
        if "event" not in r
    ]


def cli(config: Path) -> subprocess.Popen[bytes]:
    """``ftx train --config`` in a child process; its stderr goes to ``stderr.log`` beside."""
    cmd = [sys.executable, "-m", "ftx.cli", "train", "--config", str(config), "--quiet"]
    with (config.parent / "stderr.log").open("ab") as log:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)


def stderr(config: Path) -> str:
    return (config.parent / "stderr.log").read_text()


def last_step(run: Path) -> int:
    try:
        records = read_metrics(run / "metrics.jsonl")
    except (OSError, ValueError):
        return 0
    return max((r["step"] for r in records), default=0)


def kill_at(config: Path, run: Path, step: int) -> None:
    """Starts ``ftx train`` and SIGKILLs it once the metrics show ``step`` (mid-way through
    whatever it does next: a step, an evaluation or a checkpoint write)."""
    proc = cli(config)
    deadline = time.monotonic() + 120
    while last_step(run) < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"finished before step {step}: {stderr(config)}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_bit_exact(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    from ftx import train

    keys = make_config(
        iters=14,
        grad_accumulation=2,
        dropout=0.1,
        eval_every=4,
        report_every=1,
        save_every=1,
        keep_checkpoints=2,
        rank=4,
    )
    reference = tmp_path / "reference"
    train({**keys, "out": reference})

    run = tmp_path / "killed"
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {k: str(v) if isinstance(v, Path) else v for k, v in {**keys, "out": run}.items()}
        )
    )
    points = sorted(random.Random(7).sample(range(2, 13), 3))
    for step in points:
        kill_at(config, run, step)
    done = cli(config)
    assert done.wait(timeout=120) == 0, stderr(config)

    want = (reference / "adapters.safetensors").read_bytes()
    assert (run / "adapters.safetensors").read_bytes() == want
    assert steps_of(run) == steps_of(reference)
    assert [r["step"] for r in steps_of(run)] == list(range(1, 15))
    events = [r["event"] for r in read_metrics(run / "metrics.jsonl") if "event" in r]
    assert "resumed" in events
    assert not list(run.rglob(".tmp-*")), "a partial file was left behind"


def test_resume_refuses_changed_config_or_data(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path, tiny_llama: Path
) -> None:
    from tiny_models import write_artifact

    from ftx import train

    keys = make_config(iters=2, save_every=1)
    train(keys)
    with pytest.raises(ConfigError, match=r"learning_rate: 0.001 -> 0.002"):
        train({**keys, "learning_rate": 2e-3})
    other = write_artifact(tmp_path / "other", tiny_llama, {"train": 64}, seed=1)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["provenance"] = "other"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="data changed"):
        train({**keys, "data": other})
    # More iterations are allowed: the run continues from its last checkpoint.
    r = train({**keys, "iters": 4})
    assert r.resumed_from == 2 and r.steps == 4


def test_a_damaged_checkpoint_is_skipped_for_the_previous_one(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    from ftx import train
    from ftx.training import checkpoint

    keys = make_config(iters=3, save_every=1)
    run = Path(keys["out"])
    train(keys)
    newest = checkpoint.folder(run, 3) / "optimizer.safetensors"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))
    ckpt, skipped = checkpoint.latest(run)
    assert ckpt is not None and ckpt.step == 2
    assert "checksum" in skipped[0]
    r = train({**keys, "iters": 4})
    assert r.resumed_from == 2
    # every checkpoint damaged: refused, not a silent restart from step 0 that prunes them
    for step in checkpoint.steps(run):
        f = checkpoint.folder(run, step) / "optimizer.safetensors"
        f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 0xFF]))
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ConfigError, match="every checkpoint there is damaged"):
        train({**keys, "iters": 5})
    assert sorted(p.name for p in run.rglob("*")) == before


def test_resume_flag_without_a_checkpoint_is_an_error(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    from ftx import train

    with pytest.raises(ConfigError, match="no valid checkpoint"):
        train(make_config(), resume=True)


def test_early_stopping_exports_the_best_checkpoint(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    import mlx.core as mx

    from ftx import train
    from ftx.training import checkpoint

    # A learning rate this high makes validation worse after the first evaluations.
    keys = make_config(
        iters=40,
        eval_every=1,
        patience=2,
        learning_rate=0.5,
        optimizer="sgd",
        save_every=1,
        keep_checkpoints=1,
    )
    r = train(keys)
    assert r.stop_reason is not None and r.stop_reason.startswith("early stopping")
    assert r.best_step is not None and r.steps == r.best_step + 2 < 40
    run = Path(keys["out"])
    # The newest checkpoint and the best are kept; the others were pruned.
    assert checkpoint.steps(run) == [r.best_step, r.steps]
    best = checkpoint.load(checkpoint.folder(run, r.best_step))
    final = mx.load(str(run / "adapters.safetensors"))
    assert all(mx.array_equal(final[k], v) for k, v in best.weights())  # type: ignore[index]
    vals = [x["val_loss"] for x in read_metrics(run / "metrics.jsonl") if x.get("val_loss")]
    assert min(vals) == r.best_val_loss


def test_non_finite_steps_are_skipped_then_stop_the_run(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    import mlx.core as mx

    from ftx import train
    from ftx.training import checkpoint
    from ftx.training.trainer import DivergedError

    # SGD at 1e30 without clipping: the first update overflows, every later loss is not finite.
    keys = make_config(
        iters=20,
        optimizer="sgd",
        learning_rate=1e30,
        max_grad_norm=None,
        max_bad_steps=3,
        save_every=None,
    )
    events: list[dict[str, Any]] = []
    with pytest.raises(DivergedError, match="3 steps in a row"):
        train(keys, callbacks=[lambda r: events.append(r) if r.get("event") else None])
    assert [e["event"] for e in events].count("skipped_step") >= 3
    run = Path(keys["out"])
    ckpt, _ = checkpoint.latest(run)
    assert ckpt is not None
    for _, w in ckpt.weights():
        assert bool(mx.isfinite(w).all())


@pytest.mark.slow
def test_an_unwritable_disk_stops_with_a_clear_error_and_keeps_the_last_checkpoint(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """A file-size limit makes every write beyond it fail (EFBIG), as a full disk does."""
    keys = make_config(iters=2, save_every=1)
    run = Path(keys["out"])
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in keys.items()})
    )
    assert cli(config).wait(timeout=120) == 0
    good = sorted(p.name for p in (run / "checkpoints").iterdir())

    keys["iters"] = 4
    config.write_text(
        yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in keys.items()})
    )
    limit = (run / "checkpoints" / good[-1] / "adapters.safetensors").stat().st_size // 2
    script = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "from ftx.cli import main; sys.exit(main(['train', '--config', sys.argv[1], '-q']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(config)], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "cannot write" in done.stderr and "step-0000003" in done.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == good
    from ftx.training import checkpoint

    ckpt, skipped = checkpoint.latest(run)
    assert ckpt is not None and ckpt.step == 2 and not skipped
    assert FtxIOError  # the error class the CLI maps to exit code 1


def test_ctrl_c_checkpoints_the_last_step_and_exits_130(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    from ftx.training import checkpoint

    keys = make_config(iters=400, report_every=1, save_every=1000)
    run = Path(keys["out"])
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in keys.items()})
    )
    proc = cli(config)
    deadline = time.monotonic() + 120
    while last_step(run) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "run the same command again to resume" in stderr(config)
    ckpt, _ = checkpoint.latest(run)
    assert ckpt is not None and 3 <= ckpt.step < 400
    assert ckpt.step == last_step(run)


def test_no_resume_refuses_a_folder_with_checkpoints(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    from ftx import train

    keys = make_config(iters=1, save_every=1)
    train(keys)
    with pytest.raises(ConfigError, match="holds checkpoints"):
        train(keys, resume=False)

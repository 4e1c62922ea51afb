"""``report_to``: TensorBoard, W&B and MLflow record what ``metrics.jsonl`` records, read back
from what each one wrote (offline, no network); a failing tracker never stops the run."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from ftx.config import TrackerName, config_diff, load_config, resolved, validate
from ftx.errors import ConfigIssues, TrackerWarning
from ftx.training.metrics import KEYS, read_metrics
from ftx.training.trackers import BACKENDS

pytestmark = pytest.mark.mlx


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """W&B offline, MLflow on a SQLite file (returned), neither phoning home."""
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "mlflow.db"


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B run file: LevelDB's log format (32 KiB blocks of chunks, each with
    a 7-byte header: crc, length, type) after a 7-byte W&B header, each record a protobuf."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def _items(items: Any) -> dict[str, Any]:
    return {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in items}


def read_wandb(folder: Path) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """The run record, the history rows and the final summary of the one offline run there."""
    [path] = folder.glob("wandb/offline-run-*/run-*.wandb")
    run, history, summary = None, [], {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            history.append(_items(record.history.item))
        elif kind == "summary":
            summary |= _items(record.summary.update)
    return run, history, summary


def unfenced(text: bytes) -> Any:
    return json.loads(text.decode().removeprefix("```json\n").removesuffix("\n```"))


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        out |= flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_each_tracker_records_the_config_every_metrics_line_and_the_summary(
    tiny_llama: Path, prepared: Path, tmp_path: Path, offline: Path
) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ftx.cli", "train"),
            *("--model", str(tiny_llama), "--data", str(prepared), "--out", str(out)),
            *("--iters", "4", "--batch-size", "2", "--max-seq-length", "128"),
            *("--eval-every", "2", "--report-every", "1"),
            *("--report-to", "tensorboard,wandb,mlflow"),
            *("--project", "demo", "--run-name", "trial-1", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # stdout holds the JSON alone, whatever the trackers print
    config = load_config(out / "config.yaml").model_dump(mode="json")
    lines = [
        {k: v for k, v in r.items() if v is not None}
        for r in read_metrics(out / "metrics.jsonl")
        if "event" not in r
    ]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    series = {k: [(r["step"], r[k]) for r in lines if k in r] for k in KEYS if k != "step"}
    assert [s for s, _ in series["val_loss"]] == [2, 4]
    numbers = {
        k: v
        for k, v in flat(summary).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    for key, points in series.items():  # event files hold float32
        got = [(e.step, e.value) for e in board.Scalars(key)]
        assert got == [(s, pytest.approx(v, rel=1e-6)) for s, v in points], key
    assert unfenced(board.Tensors("config/text_summary")[0].tensor_proto.string_val[0]) == config
    assert unfenced(board.Tensors("summary/text_summary")[0].tensor_proto.string_val[0]) == summary
    for key, value in numbers.items():
        assert [(e.step, e.value) for e in board.Scalars(f"summary/{key}")] == [
            (4, pytest.approx(value, rel=1e-6))
        ]

    run, history, final = read_wandb(out)
    assert (run.project, run.display_name) == ("demo", "trial-1")
    assert {k: v for k, v in _items(run.config.update).items() if k != "_wandb"} == config
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    assert [{k: v for k, v in h.items() if not k.startswith("_")} for h in history] == [
        {k: v for k, v in r.items() if k != "step"} for r in lines
    ]
    assert {k: final[f"summary/{k}"] for k in flat(summary)} == flat(summary)

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{offline}")
    experiment = client.get_experiment_by_name("demo")
    assert experiment is not None
    [mlrun] = client.search_runs([experiment.experiment_id])
    assert (mlrun.info.run_name, mlrun.info.status) == ("trial-1", "FINISHED")
    assert mlrun.data.params == {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()
    }
    for key, points in series.items():
        history_ = client.get_metric_history(mlrun.info.run_id, key)
        assert sorted((m.step, m.value) for m in history_) == points, key
    assert {k: mlrun.data.metrics[f"summary/{k}"] for k in numbers} == numbers
    words = {k: v for k, v in flat(summary).items() if isinstance(v, str)}
    assert {k: mlrun.data.tags[f"summary/{k}"] for k in words} == words


@pytest.mark.slow
def test_tensorboard_keeps_the_reports_of_a_killed_run_and_shows_the_resumed_one_once(
    tiny_llama: Path, prepared: Path, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    command = [
        *(sys.executable, "-m", "ftx.cli", "train", "--quiet", "--report-to", "tensorboard"),
        *("--model", str(tiny_llama), "--data", str(prepared), "--out", str(out)),
        *("--iters", "30", "--batch-size", "2", "--max-seq-length", "128"),
        *("--report-every", "1", "--save-every", "3"),
    ]

    def board_steps() -> list[int]:
        board = EventAccumulator(str(out / "tensorboard"))
        board.Reload()
        return [e.step for e in board.Scalars("train_loss")] if board.Tags()["scalars"] else []

    def metrics_steps() -> list[int]:
        path = out / "metrics.jsonl"
        return [r["step"] for r in read_metrics(path) if "event" not in r] if path.is_file() else []

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(metrics_steps()) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    seen = metrics_steps()
    # The trackers hear of a line after metrics.jsonl has it: the kill may fall in between.
    assert board_steps() in (seen, seen[:-1])

    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list((out / "tensorboard").iterdir())) == 2
    assert board_steps() == metrics_steps() == list(range(1, 31))


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("failure", ["unreachable at start", "store lost mid-run"])
def test_a_failing_tracker_is_dropped_with_one_warning_and_the_run_finishes(
    failure: str,
    make_config: Callable[..., dict[str, Any]],
    offline: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ftx import train

    callbacks = []
    if failure == "unreachable at start":
        # MLflow's own retries (minutes) are not waited for: the run starts at once.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_port())
        stage = "start"
    else:

        def lose_the_store(record: dict[str, Any]) -> None:
            # Runs before the trackers see step 2: MLflow's next write finds no table.
            if record.get("step") == 2 and "event" not in record:
                with sqlite3.connect(offline) as db:
                    db.execute("DROP TABLE metrics")

        callbacks.append(lose_the_store)
        stage = "log"
    config = make_config(report_to=["mlflow", "tensorboard"], report_every=1)
    with pytest.warns(TrackerWarning) as caught:
        report = train(config, callbacks=callbacks)
    assert [str(w.message).split(" failed (")[0] for w in caught] == [f"mlflow: {stage}"]
    assert str(caught[0].message).endswith("the run goes on without mlflow")
    assert (report.steps, report.stop_reason) == (4, "completed 4 steps")
    assert (Path(config["out"]) / "adapters.safetensors").is_file()
    board = EventAccumulator(str(Path(config["out"]) / "tensorboard"))
    board.Reload()
    assert [e.step for e in board.Scalars("train_loss")] == [1, 2, 3, 4]


def test_the_cli_shows_a_failed_tracker_as_one_warning_line(
    tiny_llama: Path, prepared: Path, tmp_path: Path, offline: Path
) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": closed_port()}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ftx.cli", "train", "--quiet", "--report-to", "mlflow"),
            *("--model", str(tiny_llama), "--data", str(prepared), "--out", str(tmp_path / "r")),
            *("--iters", "2", "--batch-size", "2", "--max-seq-length", "128"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if "mlflow" in ln]
    assert line.startswith("warning: mlflow: start failed (URLError: ")
    assert "Connection refused" in line
    assert line.endswith("; the run goes on without mlflow")


def test_a_tracker_not_installed_is_refused_before_loading_naming_the_extra(
    tiny_llama: Path, prepared: Path, tmp_path: Path
) -> None:
    code = """
import sys
sys.modules["wandb"] = None  # as after `pip install ftx[train]`: `import wandb` fails
from ftx.cli import main
try:
    main(sys.argv[1:])
finally:
    print("mlx loaded:", "mlx.core" in sys.modules)
"""
    out = tmp_path / "run"
    done = subprocess.run(
        [
            *(sys.executable, "-c", code, "train"),
            *("--model", str(tiny_llama), "--data", str(prepared), "--out", str(out)),
            *("--iters", "2", "--report-to", "tensorboard,wandb"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "1 configuration problem(s)" in done.stderr
    assert (
        "report_to = 'wandb': needs the wandb package, which is not installed: "
        "pip install 'ftx[wandb]'"
    ) in done.stderr
    assert done.stdout.strip() == "mlx loaded: False"
    assert not out.exists()


def test_report_to_is_a_yaml_list_or_a_comma_separated_flag_and_may_change_on_resume(
    tmp_path: Path,
) -> None:
    from ftx.cli.train import command

    base = {"model": "m", "data": "d", "out": "o"}
    path = tmp_path / "train.yaml"
    path.write_text("model: m\ndata: d\nout: o\nreport_to: [tensorboard]\n")
    assert load_config(path).report_to == ["tensorboard"]
    assert load_config(path, {"report_to": ["wandb", "mlflow"]}).report_to == ["wandb", "mlflow"]
    args = ["--model", "m", "--data", "d", "--out", "o", "--report-to", "wandb, mlflow"]
    assert command.make_context("train", args).params["report_to"] == ["wandb", "mlflow"]
    assert validate(base).report_to == []

    with pytest.raises(ConfigIssues) as bad:
        validate({**base, "report_to": ["neptune"]})
    assert "report_to.0 = 'neptune'" in str(bad.value) and "'tensorboard'" in str(bad.value)
    with pytest.raises(ConfigIssues, match="name each tracker once"):
        validate({**base, "report_to": ["wandb", "wandb"]})
    with pytest.raises(ConfigIssues, match="run_name = 'r': names the run in a tracker"):
        validate({**base, "run_name": "r"})

    before = resolved(validate(base))
    after = resolved(validate({**base, "report_to": ["mlflow"], "project": "p", "run_name": "r"}))
    assert config_diff(before, after) == []


def test_every_tracker_name_has_a_backend() -> None:
    assert set(BACKENDS) == set(get_args(TrackerName))

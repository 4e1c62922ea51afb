"""Bad input, interruptions and failures: clear errors, nothing lost, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ftx


def _ftx(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", *map(str, args)], capture_output=True, text=True
    )


def _big_corpus(path: Path, example_data: Path, copies: int) -> Path:
    lines = example_data.read_text().splitlines()
    with path.open("w") as f:
        for k in range(copies):
            for line in lines:
                # A distinct suffix per copy keeps dedup from shrinking the work.
                f.write(line.replace('"}', f' #{k}"}}', 1) + "\n")
    return path


def test_cli_json_prints_one_object(tmp_path: Path, example_data: Path, tiny_model: Path) -> None:
    out = _ftx("prepare", example_data, "--model", tiny_model, "--out", tmp_path / "o", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["splits"]["train"]["records"] == 400
    assert report["rejects"]["bad_json"] == 1


def test_cli_usage_and_data_errors_have_exit_codes_and_one_line(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    missing_model = _ftx("prepare", example_data, "--out", tmp_path / "o")
    assert missing_model.returncode == 2
    no_file = _ftx("prepare", tmp_path / "nope.jsonl", "--model", tiny_model, "--out", tmp_path)
    assert no_file.returncode == 2
    assert "nope.jsonl" in no_file.stderr and "Traceback" not in no_file.stderr
    too_many = _ftx(
        "prepare",
        example_data,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "o",
        "--max-reject-ratio",
        "0.001",
    )
    assert too_many.returncode == 1
    assert "max-reject-ratio" in too_many.stderr and "Traceback" not in too_many.stderr
    # Nothing was published, but the reasons were kept.
    assert not (tmp_path / "o").exists()
    kept = tmp_path / "o.rejects.jsonl"
    codes = sorted(json.loads(x)["code"] for x in kept.read_text().splitlines())
    assert codes == ["bad_json", "duplicate", "nothing_to_train", "unknown_role"]


def test_sigkill_mid_run_leaves_nothing_that_looks_complete(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    corpus = _big_corpus(tmp_path / "big.jsonl", example_data, copies=300)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ftx.cli",
            "prepare",
            str(corpus),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it once it is writing: the staging folder exists.
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None, "the run finished before it could be killed; use more data"
    proc.kill()
    proc.wait()
    assert not out.exists()
    for leftover in tmp_path.glob(".out.*"):
        assert leftover.name.endswith((".partial", ".lock"))
        assert not (leftover / "manifest.json").exists()
    with pytest.raises(ftx.FtxFileNotFoundError):
        ftx.load_dataset(out)
    # The next run of the same --out removes what the dead one left.
    ftx.prepare(example_data, out=out, model=tiny_model)
    assert not list(tmp_path.glob(".out.*"))


def test_ctrl_c_stops_cleanly_and_removes_the_staging_folder(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    corpus = _big_corpus(tmp_path / "big.jsonl", example_data, copies=300)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ftx.cli",
            "prepare",
            str(corpus),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As at a terminal: a runner started in the background (`cmd &`) hands its children
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))


def test_length_policies(tmp_path: Path, example_data: Path, tiny_model: Path) -> None:
    base = ftx.prepare(example_data, model=tiny_model, out=tmp_path / "base")
    limit = int(base.splits["train"].lengths["p50"])  # type: ignore[index]
    dropped = ftx.prepare(example_data, model=tiny_model, out=tmp_path / "d", max_length=limit)
    assert dropped.rejects.get("too_long", 0) > 0
    assert dropped.splits["train"].lengths["max"] <= limit  # type: ignore[index]
    cut = ftx.prepare(
        example_data,
        model=tiny_model,
        out=tmp_path / "t",
        max_length=limit,
        length_policy="truncate",
    )
    assert cut.splits["train"].truncated > 0
    assert cut.accepted + cut.rejects.get("too_long", 0) == base.accepted
    ds = ftx.load_dataset(tmp_path / "t")
    assert all(len(ids) <= limit and mask.any() for ids, mask in ds)
    with pytest.raises(ftx.DataError, match=r"chat\.jsonl:\d+: .*longer than max_length"):
        ftx.prepare(
            example_data,
            model=tiny_model,
            out=tmp_path / "e",
            max_length=limit,
            length_policy="error",
        )
    assert not (tmp_path / "e").exists()


def test_train_on_all_and_last(tmp_path: Path, example_data: Path, tiny_model: Path) -> None:
    runs = {
        t: ftx.load_dataset(
            ftx.prepare(example_data, model=tiny_model, out=tmp_path / t, train_on=t).out_dir
        )
        for t in ("assistant", "last", "all")
    }
    n = len(runs["all"])
    for i in range(n):
        _, m_all = runs["all"][i]
        _, m_asst = runs["assistant"][i]
        _, m_last = runs["last"][i]
        assert m_all.all()
        assert m_last.sum() <= m_asst.sum() < m_all.sum()
        # `last` trains a subset of what `assistant` trains, ending at the same place.
        assert not (m_last & ~m_asst).any()
        assert np_last_index(m_last) == np_last_index(m_asst)


def np_last_index(mask: object) -> int:
    import numpy as np

    return int(np.flatnonzero(mask)[-1])


def test_split_by_count_and_stability_when_records_are_added(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    exact = ftx.prepare(example_data, model=tiny_model, out=tmp_path / "c", valid=17, test=5)
    assert exact.splits["valid"].records == 17 and exact.splits["test"].records == 5

    lines = example_data.read_text().splitlines()
    half = tmp_path / "half.jsonl"
    half.write_text("\n".join(lines[:200]) + "\n")
    a = ftx.prepare(half, model=tiny_model, out=tmp_path / "a", valid=0.2)
    b = ftx.prepare(example_data, model=tiny_model, out=tmp_path / "b", valid=0.2)

    def as_set(report: ftx.PrepareReport, split: str) -> set[bytes]:
        return {ids.tobytes() for ids, _ in ftx.load_dataset(report.out_dir, split)}

    assert as_set(a, "valid") <= as_set(b, "valid")
    assert not as_set(a, "train") & as_set(b, "valid")


def test_parquet_and_csv_inputs_report_their_own_rows(tmp_path: Path, tiny_model: Path) -> None:
    pl = pytest.importorskip("polars")
    rows = {
        "instruction": ["Add 2 and 3.", "", "Name a color."],
        "output": ["2 plus 3 is 5.", "orphan", "Blue."],
    }
    pl.DataFrame(rows).write_parquet(tmp_path / "d.parquet")
    pl.DataFrame(rows).write_csv(tmp_path / "d.csv")
    for name in ("d.parquet", "d.csv"):
        r = ftx.prepare(tmp_path / name, model=tiny_model, out=tmp_path / f"o-{name}")
        assert r.accepted == 2, r.rejects
        (reject,) = [json.loads(x) for x in (r.out_dir / "rejects.jsonl").read_text().splitlines()]
        assert reject["file"] == str(tmp_path / name)
        # Row 2 of the table; a CSV's header is line 1, so that row is on line 3.
        assert reject["line"] == (3 if name == "d.csv" else 2)


def test_gzip_input(tmp_path: Path, example_data: Path, tiny_model: Path) -> None:
    import gzip

    gz = tmp_path / "chat.jsonl.gz"
    gz.write_bytes(gzip.compress(example_data.read_bytes()))
    r = ftx.prepare(gz, model=tiny_model, out=tmp_path / "o")
    assert r.accepted == 400


records = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "messages",
                    "role",
                    "content",
                    "conversations",
                    "from",
                    "value",
                    "instruction",
                    "output",
                    "input",
                    "text",
                    "prompt",
                    "completion",
                    "tools",
                    "tool_calls",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(records, min_size=1, max_size=8), st.binary(max_size=30))
def test_random_records_never_crash(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, recs: list[object], junk: bytes
) -> None:
    d = tmp_path_factory.mktemp("fuzz")
    data = d / "in.jsonl"
    data.write_bytes(b"\n".join(json.dumps(r).encode() for r in recs) + b"\n" + junk)
    try:
        r = ftx.prepare(data, model=tiny_model, out=d / "o")
    except ftx.DataError as e:
        assert "no usable record" in str(e)
    else:
        assert r.accepted + r.rejected + r.duplicates == r.records_read
    assert os.path.exists(d)

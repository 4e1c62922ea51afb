"""`ftx inspect` on a real prepared artifact and on the same raw files: counts against the
manifest, statistics against NumPy on the arrays, outliers and clusters against the records,
the terminal and JSON outputs, and bad folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ftx
from ftx.data import load_dataset, read_manifest

TEXT = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "polars":
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Missing())
"""


def _ftx(*args: str, env_code: str = "") -> subprocess.CompletedProcess[str]:
    code = env_code + "from ftx.cli import main\nmain(sys.argv[1:])\n"
    return subprocess.run(
        [sys.executable, "-c", "import sys\n" + code, *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def inputs(
    tmp_path_factory: pytest.TempPathFactory, example_data: Path, shared: Path
) -> list[Path]:
    """Three formats in three files: OpenAI messages (with a duplicate and three bad records),
    Alpaca, and ShareGPT, plus one file whose records share a system line."""
    extra = tmp_path_factory.mktemp("raw") / "polite.jsonl"
    lines = [
        {
            "messages": [
                {"role": "system", "content": "Always answer politely."},
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}, thank you for asking."},
            ]
        }
        for i in range(5)
    ]
    extra.write_text("".join(json.dumps(x) + "\n" for x in lines))
    data = shared / "datasets" / "torchtune"
    return [example_data, data / "alpaca_tiny.json", data / "chat_tiny.json", extra]


@pytest.fixture(scope="module")
def prepared(
    tmp_path_factory: pytest.TempPathFactory, inputs: list[Path], tiny_model: Path
) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "art"
    ftx.prepare(inputs, model=tiny_model, out=out, valid=0.1)
    return out


@pytest.fixture(scope="module")
def found(prepared: Path) -> ftx.Inspection:
    return ftx.inspect(prepared, top=3)


def _all_records(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for split in ("train", "valid", "test"):
        out.extend(load_dataset(root, split))
    return out


def test_cli_json_counts_match_the_manifest(prepared: Path, inputs: list[Path]) -> None:
    done = _ftx("inspect", str(prepared), "--json")
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)  # one JSON object, nothing else on stdout
    m = read_manifest(prepared).raw
    assert s["source"] == {"kind": "artifact", "path": str(prepared)}
    assert s["records_read"] == m["records_read"]
    assert s["duplicates"] == m["duplicates"] == 1
    assert s["rejects"] == m["rejects"] == {"bad_json": 1, "nothing_to_train": 1, "unknown_role": 1}
    for name, split in m["splits"].items():
        assert s["splits"][name] == {
            "records": split["records"],
            "tokens": split["tokens"],
            "trained_tokens": split["trained_tokens"],
        }
    assert s["records"] == sum(x["records"] for x in m["splits"].values())
    assert s["tokens"] == sum(x["tokens"] for x in m["splits"].values())
    # Per source file: every input, in order, its kept records.
    assert [x["name"] for x in s["sources"]] == [str(p) for p in inputs]
    kept = [x["records"] for x in s["sources"]]
    assert kept[0] == 400 and kept[3] == 5
    assert kept[1] == len(json.loads(inputs[1].read_text()))
    assert kept[2] == len(json.loads(inputs[2].read_text()))
    by_format = {x["name"]: x["records"] for x in s["formats"]}
    assert set(by_format) == {"messages", "sharegpt", "alpaca"}
    assert sum(by_format.values()) == s["records"]
    assert by_format["alpaca"] >= kept[1] and by_format["sharegpt"] >= kept[2]


def test_lengths_fractions_and_turns_match_the_arrays(
    found: ftx.Inspection, prepared: Path
) -> None:
    records = _all_records(prepared)
    lengths = np.array([len(ids) for ids, _ in records])
    trained = np.array([int(mask.sum()) for _, mask in records])
    s = found.summary
    for q in (50, 90, 99):
        assert s["lengths"][f"p{q}"] == pytest.approx(np.percentile(lengths, q))
    assert (s["lengths"]["min"], s["lengths"]["max"]) == (lengths.min(), lengths.max())
    assert sum(h["records"] for h in s["lengths"]["histogram"]) == len(records)
    assert s["trained_tokens"] == trained.sum()
    assert s["trained_fraction"] == pytest.approx(trained.sum() / lengths.sum())
    frame = found.frame
    import polars as pl

    assert isinstance(frame, pl.DataFrame)
    assert frame.height == len(records) == s["records"]
    assert frame.columns == list(ftx.inspection.FRAME_COLUMNS)
    assert frame["tokens"].to_list() == lengths.tolist()
    np.testing.assert_allclose(frame["trained_fraction"].to_numpy(), trained / lengths)
    assert s["trained_fractions"]["min"] == pytest.approx((trained / lengths).min())
    # Each record's format and turns are those of its line: the example file mixes formats.
    keys = {"messages": "messages", "conversations": "sharegpt", "instruction": "alpaca"}
    lines = Path(frame["file"][0]).read_text().splitlines()
    for row in frame.filter(pl.col("file") == frame["file"][0]).iter_rows(named=True):
        rec = json.loads(lines[row["line"] - 1])
        (key,) = set(rec) & set(keys)
        assert row["format"] == keys[key]
        if key == "messages":
            assert row["turns"] == sum(m["role"] == "assistant" for m in rec["messages"])
    row = frame.filter(pl.col("file").str.ends_with("polite.jsonl")).row(0, named=True)
    assert row["turns"] == 1 and row["format"] == "messages"
    sharegpt = frame.filter(pl.col("file").str.ends_with("chat_tiny.json"))
    assert set(sharegpt["format"]) == {"sharegpt"}
    convs = json.loads(Path(sharegpt["file"][0]).read_text())
    want = [sum(t["from"] == "gpt" for t in c["conversations"]) for c in convs]
    assert sorted(sharegpt["turns"].to_list()) == sorted(want)
    assert sum(int(n) for n in s["turns"]["records"].values()) == len(records)


def _decode(tiny_model: Path, ids: np.ndarray) -> str:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    return tok.decode(ids.tolist(), skip_special_tokens=False)


def _last_reply(rec: dict[str, Any]) -> str:
    if "messages" in rec:
        return str(rec["messages"][-1]["content"])
    if "conversations" in rec:
        return str(rec["conversations"][-1]["value"])
    return str(rec["output"])


def test_outliers_are_the_extreme_records_with_their_trained_text(
    found: ftx.Inspection, prepared: Path, tiny_model: Path
) -> None:
    out = found.summary["outliers"]
    lengths = found.frame["tokens"].to_numpy()
    fractions = found.frame["trained_fraction"].to_numpy()
    assert [r["tokens"] for r in out["longest"]] == sorted(lengths, reverse=True)[:3]
    assert [r["tokens"] for r in out["shortest"]] == sorted(lengths)[:3]
    assert out["lowest_trained_fraction"][0]["trained_fraction"] == pytest.approx(fractions.min())
    for r in out["longest"] + out["shortest"]:
        ids, mask = load_dataset(prepared, r["split"])[r["index"]]
        text = "".join(seg["text"] for seg in r["segments"])
        assert text == _decode(tiny_model, ids)
        # The trained stretches are the decoded runs of mask 1, in order.
        cut = np.flatnonzero(np.diff(mask)) + 1
        pieces = [
            (_decode(tiny_model, ids_run), bool(m_run[0]))
            for ids_run, m_run in zip(np.split(ids, cut), np.split(mask, cut), strict=True)
        ]
        assert [seg["trained"] for seg in r["segments"]] == [t for _, t in pieces]
        assert r["trained_tokens"] == int(mask.sum())
        # It is the record on that line of that file.
        source = Path(r["file"])
        if source.suffix == ".jsonl":
            line = source.read_text().splitlines()[r["line"] - 1]
            reply = _last_reply(json.loads(line))
            assert reply in "".join(s["text"] for s in r["segments"] if s["trained"])


def test_duplicates_cluster_on_the_kept_record(found: ftx.Inspection, prepared: Path) -> None:
    rejects = [json.loads(x) for x in (prepared / "rejects.jsonl").read_text().splitlines()]
    (dup,) = [x for x in rejects if x["code"] == "duplicate"]
    c = found.summary["duplicate_clusters"]
    assert c["codes"] == ["duplicate", "near_duplicate"]
    assert (c["clusters"], c["records_in_clusters"]) == (1, 1)
    (cluster,) = c["largest"]
    assert cluster["kept"] == {"file": dup["kept_file"], "line": dup["kept_line"]}
    assert cluster["members"] == [{"file": dup["file"], "line": dup["line"], "code": "duplicate"}]
    lines = Path(dup["file"]).read_text().splitlines()
    assert json.loads(lines[dup["line"] - 1]) == json.loads(lines[dup["kept_line"] - 1])
    rec = cluster["record"]
    assert (rec["file"], rec["line"]) == (dup["kept_file"], dup["kept_line"])


def test_near_duplicates_join_the_clusters_and_the_cli_reads_a_near_dedup_artifact(
    tmp_path: Path, tiny_model: Path, shared: Path
) -> None:
    src = json.loads((shared / "datasets/llama_factory/alpaca_en_demo.json").read_text())[:20]

    def chat(r: dict[str, str], tail: str = "") -> str:
        msgs = [
            {"role": "user", "content": r["instruction"]},
            {"role": "assistant", "content": r["output"] + tail},
        ]
        return json.dumps({"messages": msgs}) + "\n"

    data = tmp_path / "near.jsonl"
    data.write_text("".join(chat(r) for r in src) + chat(src[3], " Thanks.") + chat(src[3]))
    out = tmp_path / "art"
    ftx.prepare(data, model=tiny_model, out=out, near_dedup=True)
    done = _ftx("inspect", str(out), "--json")
    assert done.returncode == 0, done.stderr
    c = json.loads(done.stdout)["duplicate_clusters"]
    (cluster,) = c["largest"]
    assert cluster["kept"] == {"file": str(data), "line": 4}
    assert cluster["codes"] == {"near_duplicate": 1, "duplicate": 1}
    assert [m["line"] for m in cluster["members"]] == [21, 22]


def test_most_repeated_lines_count_records(found: ftx.Inspection) -> None:
    lines = {x["line"]: x["records"] for x in found.summary["repeated_lines"]}
    assert lines["Always answer politely."] == 5
    counts = [x["records"] for x in found.summary["repeated_lines"]]
    assert counts == sorted(counts, reverse=True) and min(counts) >= 2


def _without_source(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k != "source"}


def test_raw_files_give_what_the_artifact_gives_and_write_nothing(
    found: ftx.Inspection, inputs: list[Path], tiny_model: Path, tmp_path: Path
) -> None:
    before = sorted(p.name for p in inputs[-1].parent.iterdir())
    raw = ftx.inspect(inputs, model=tiny_model, valid=0.1, top=3)
    assert raw.summary["source"] == {"kind": "files", "inputs": [str(p) for p in inputs]}
    assert _without_source(raw.summary) == _without_source(found.summary)
    assert raw.frame.equals(found.frame)
    assert sorted(p.name for p in inputs[-1].parent.iterdir()) == before
    # The CLI takes prepare's settings for raw files; other settings, other answer.
    done = _ftx("inspect", *map(str, inputs), "--model", str(tiny_model), "--no-dedup", "--json")
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["duplicates"] == 0 and s["records"] == found.summary["records"] + 1


def test_terminal_report_shows_every_section(prepared: Path) -> None:
    done = _ftx("inspect", str(prepared), "--top", "1")
    assert done.returncode == 0, done.stderr
    for title in (
        "splits",
        "per source file",
        "per format",
        "p50",
        "p90",
        "p99",
        "token lengths",
        "trained fractions",
        "turns",
        "reject reasons",
        "longest records",
        "shortest records",
        "lowest trained fraction",
        "most repeated lines",
        "duplicate clusters",
        "Always answer politely.",
    ):
        assert title in done.stdout, title


def test_frame_without_polars_names_the_extra_and_json_still_works(prepared: Path) -> None:
    done = _ftx("inspect", str(prepared), "--json", env_code=TEXT)
    assert done.returncode == 0, done.stderr
    code = TEXT + (
        "import ftx\ntry:\n    ftx.inspect(sys.argv[1]).frame\nexcept ftx.ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(prepared)], capture_output=True, text=True
    )
    assert "ftx[tabular]" in out.stdout, out.stderr


def test_bad_folders_are_clear_errors(
    prepared: Path, tmp_path: Path, tiny_model: Path, shared: Path
) -> None:
    # Decoding with another tokenizer than the artifact's would show other text: refused.
    other = shared / "tokenizers" / "qwen3"
    done = _ftx("inspect", str(prepared), "--model", str(other))
    assert done.returncode == 1 and "another tokenizer" in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _ftx("inspect", str(empty))
    assert done.returncode == 2 and "no manifest.json" in done.stderr
    done = _ftx("inspect", str(tmp_path / "nowhere.jsonl"), "--model", str(tiny_model))
    assert done.returncode == 2 and "nowhere.jsonl" in done.stderr
    done = _ftx("inspect", str(prepared.parent / "x.jsonl"))
    assert done.returncode == 2
    # A damaged per-record table: named, never read.
    broken = tmp_path / "broken"
    shutil.copytree(prepared, broken)
    rows = broken / "train.records.npy"
    rows.write_bytes(rows.read_bytes()[:-8] + b"\xff" * 8)
    done = _ftx("inspect", str(broken))
    assert done.returncode == 1 and "train.records.npy" in done.stderr and "changed" in done.stderr
    # An artifact of an older ftx (no per-record table) says so.
    old = tmp_path / "old"
    shutil.copytree(prepared, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["record_info"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    done = _ftx("inspect", str(old))
    assert done.returncode == 1 and "older ftx" in done.stderr
    # An artifact with no record at all.
    hollow = tmp_path / "hollow"
    shutil.copytree(prepared, hollow)
    manifest = json.loads((hollow / "manifest.json").read_text())
    manifest["splits"] = {}
    (hollow / "manifest.json").write_text(json.dumps(manifest))
    done = _ftx("inspect", str(hollow))
    assert done.returncode == 1 and "holds no record" in done.stderr

"""`--near-dedup` and `--decontaminate` end to end on real data: which records are rejected, what
their rejects name, determinism across thread counts, and bad evaluation files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ftx
from ftx import _core
from ftx.errors import ConfigIssues, DataError

ALPACA = "datasets/llama_factory/alpaca_en_demo.json"
MT_BENCH = "datasets/fastchat/mt_bench_question.jsonl"
MT_BENCH_ANSWERS = "datasets/fastchat/mt_bench_reference_answer_gpt-4.jsonl"


def _ftx(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=None if env is None else os.environ | env,
    )


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rejects(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]


@pytest.fixture
def with_near_copies(tmp_path: Path, shared: Path) -> tuple[Path, dict[int, int]]:
    """200 real alpaca records, then an edited copy of every tenth long one (a sentence added
    to its answer, a word of its instruction changed): the copy's line -> the original's."""
    rows = json.loads((shared / ALPACA).read_text(encoding="utf-8"))[:200]
    copies: dict[int, int] = {}
    out = list(rows)
    for i, r in enumerate(rows):
        if i % 10 == 0 and len(r["output"].split()) >= 60:
            edited = dict(r, output=r["output"] + " I hope this helps you.")
            edited["instruction"] = r["instruction"].replace(" a ", " one ", 1)
            out.append(edited)
            copies[len(out)] = i + 1
    assert len(copies) >= 10
    return _write(tmp_path / "alpaca.jsonl", out), copies


def test_near_duplicates_are_rejected_naming_the_kept_record(
    tmp_path: Path, tiny_model: Path, with_near_copies: tuple[Path, dict[int, int]]
) -> None:
    data, copies = with_near_copies
    plain = ftx.prepare(data, model=tiny_model, out=tmp_path / "plain")
    assert plain.rejects == {} and plain.accepted == 200 + len(copies)
    # Dropping near duplicates was asked for: they are not rejects that --max-reject-ratio counts.
    r = ftx.prepare(
        data, model=tiny_model, out=tmp_path / "near", near_dedup=True, max_reject_ratio=0.0
    )
    assert r.rejects == {"near_duplicate": len(copies)}
    assert r.accepted == 200
    assert r.manifest["options"]["near_dedup"] is True
    assert r.provenance != plain.provenance
    found = {x["line"]: x for x in _rejects(tmp_path / "near")}
    assert set(found) == set(copies)
    for line, x in found.items():
        assert x["code"] == "near_duplicate"
        assert (x["kept_file"], x["kept_line"]) == (str(data), copies[line])
        assert 0.8 <= x["similarity"] < 1.0
        assert f"{data}:{copies[line]}" in x["message"]
        assert x["record"]["output"].endswith("I hope this helps you.")


def test_a_stricter_threshold_keeps_the_edited_copies(
    tmp_path: Path, tiny_model: Path, with_near_copies: tuple[Path, dict[int, int]]
) -> None:
    data, copies = with_near_copies
    r = ftx.prepare(
        data,
        model=tiny_model,
        out=tmp_path / "out",
        near_dedup=True,
        near_dedup_threshold=1.0,
        near_dedup_bands=32,
    )
    assert r.rejects == {} and r.accepted == 200 + len(copies)
    assert r.manifest["options"]["near_dedup_bands"] == 32


def test_the_artifact_is_byte_identical_for_any_thread_count(
    tmp_path: Path, tiny_model: Path, with_near_copies: tuple[Path, dict[int, int]], shared: Path
) -> None:
    data, _ = with_near_copies
    outs = []
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}"
        args = ["prepare", data, "--model", tiny_model, "--out", out, "--near-dedup"]
        args += ["--decontaminate", shared / MT_BENCH, "--valid", "20", "--json"]
        p = _ftx(*args, env={"FTX_NUM_THREADS": threads})
        assert p.returncode == 0, p.stderr
        outs.append(out)
    names = sorted(f.name for f in outs[0].iterdir())
    assert names == sorted(f.name for f in outs[1].iterdir())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    assert json.loads((outs[0] / "manifest.json").read_text())["splits"]["valid"]["records"] == 20


def _mt_bench_conversations(shared: Path) -> list[tuple[int, dict[str, Any]]]:
    """MT-Bench questions with their GPT-4 reference answers as two-turn conversations (the
    way such a benchmark leaks into a training mix), each with its line in the question file."""
    answers = {}
    for line in (shared / MT_BENCH_ANSWERS).read_text(encoding="utf-8").splitlines():
        a = json.loads(line)
        answers[a["question_id"]] = a["choices"][0]["turns"]
    found = []
    for n, line in enumerate((shared / MT_BENCH).read_text(encoding="utf-8").splitlines(), 1):
        q = json.loads(line)
        # A first question of 13 words or more: its first n-gram is the question's own.
        if q["question_id"] in answers and len(q["turns"][0].split()) >= 16:
            turns = zip(q["turns"], answers[q["question_id"]], strict=True)
            messages = [
                {"role": role, "content": text}
                for pair in turns
                for role, text in zip(("user", "assistant"), pair, strict=True)
            ]
            found.append((n, {"messages": messages}))
    return found


def test_records_sharing_13_grams_with_a_benchmark_are_rejected(
    tmp_path: Path, tiny_model: Path, shared: Path
) -> None:
    clean = json.loads((shared / ALPACA).read_text(encoding="utf-8"))[:100]
    leaked = _mt_bench_conversations(shared)[::6]
    rows: list[dict[str, Any]] = list(clean)
    at = {}
    for eval_line, conv in leaked:
        rows.insert(len(rows) // 2, conv)
        at[json.dumps(conv)] = eval_line
    data = _write(tmp_path / "train.jsonl", rows)
    lines = {n: at[json.dumps(r)] for n, r in enumerate(rows, 1) if json.dumps(r) in at}
    out = tmp_path / "out"
    p = _ftx(
        "prepare", data, "--model", tiny_model, "--out", out, "--json",
        "--decontaminate", shared / MT_BENCH, "--decontaminate", shared / MT_BENCH_ANSWERS,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["rejects"] == {"contaminated": len(leaked)}
    assert report["options"]["decontaminate"] == [
        str(shared / MT_BENCH),
        str(shared / MT_BENCH_ANSWERS),
    ]
    found = {x["line"]: x for x in _rejects(out)}
    assert set(found) == set(lines)
    for line, x in found.items():
        assert x["code"] == "contaminated"
        # The first shared n-gram is the question's: the question file and its line.
        assert (x["eval_file"], x["eval_line"]) == (str(shared / MT_BENCH), lines[line])
        assert x["shared_ngrams"] >= 1
    # A record is kept when it shares fewer n-grams than the threshold asks.
    loose = ftx.prepare(
        data,
        model=tiny_model,
        out=tmp_path / "loose",
        decontaminate=[shared / MT_BENCH],
        decontaminate_threshold=10_000,
    )
    assert loose.rejects == {}


def test_the_eval_files_content_is_in_the_artifact_key(
    tmp_path: Path, tiny_model: Path, example_data: Path, shared: Path
) -> None:
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_bytes((shared / MT_BENCH).read_bytes())
    a = ftx.prepare(example_data, model=tiny_model, out=tmp_path / "a", decontaminate=[eval_file])
    again = ftx.prepare(
        example_data, model=tiny_model, out=tmp_path / "a", decontaminate=[eval_file]
    )
    assert again.cached and again.provenance == a.provenance
    eval_file.write_bytes(b"\n".join((shared / MT_BENCH).read_bytes().splitlines()[:-1]) + b"\n")
    b = ftx.prepare(example_data, model=tiny_model, out=tmp_path / "a", decontaminate=[eval_file])
    assert not b.cached and b.provenance != a.provenance


def test_a_bad_eval_file_is_named_with_its_line_and_nothing_is_written(
    tmp_path: Path, tiny_model: Path, example_data: Path, shared: Path
) -> None:
    lines = (shared / MT_BENCH).read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "eval.jsonl"
    bad.write_text("\n".join([*lines[:2], lines[2][:40], *lines[3:]]) + "\n")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"{bad}:3: not valid JSON"):
        ftx.prepare(example_data, model=tiny_model, out=out, decontaminate=[bad])
    p = _ftx("prepare", example_data, "--model", tiny_model, "--out", out, "--decontaminate", bad)
    assert p.returncode == 1 and f"{bad}:3" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))


def test_near_dedup_settings_are_checked(tiny_model: Path, example_data: Path) -> None:
    with pytest.raises(ConfigIssues) as e:
        ftx.prepare(
            example_data,
            out="unused",
            model=tiny_model,
            near_dedup_permutations=16,
            near_dedup_bands=32,
        )
    assert [i.key for i in e.value.issues] == ["near_dedup_bands"]
    with pytest.raises(ConfigIssues) as e:
        ftx.prepare(example_data, out="unused", model=tiny_model, near_dedup_threshold=0.0)
    assert "above 0" in e.value.issues[0].allowed
    assert not Path("unused").exists()


def test_the_stage_alone_returns_clusters_for_inspect(shared: Path) -> None:
    rows = json.loads((shared / ALPACA).read_text(encoding="utf-8"))[:300]
    texts = [r["instruction"] + "\n" + r["output"] for r in rows]
    texts += [texts[7] + " Thanks!", texts[3].upper()]
    found = _core.near_duplicates(texts, threads=1)
    assert (7, [(300, pytest.approx(0.95, abs=0.05))]) in found
    assert (3, [(301, 1.0)]) in found
    assert found == _core.near_duplicates(texts, threads=2)
    assert all(kept < min(m for m, _ in members) for kept, members in found)
    with pytest.raises(ftx.FtxError, match="near_dedup_ngram"):
        _core.near_duplicates(texts, ngram=0)

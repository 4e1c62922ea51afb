"""`prepare --shard I/N` + `merge`: the merged artifact is byte for byte the one `prepare` writes
on one machine, for any N; a shard set that is not whole, or not one set, is refused by name."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ftx
from ftx.errors import ConfigError, DataError
from ftx.preparation import merge, prepare_shard

LLAMA_FACTORY = "datasets/llama_factory"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> list[str]:
    """Real records in every shape a shard meets: a JSON-lines file with exact copies, near
    copies, bad lines and blank lines; one with a byte-order mark, copies of the first file's
    records and no final newline; a JSON array (read whole); a gzipped file (read whole); and a
    text file read by line."""
    d = tmp_path_factory.mktemp("corpus")
    src = shared / LLAMA_FACTORY
    rows = json.loads((src / "alpaca_en_demo.json").read_text(encoding="utf-8"))[:300]
    lines: list[str] = []
    for i, r in enumerate(rows):
        lines.append(json.dumps(r))
        if i % 7 == 0:
            lines.append(json.dumps(r))
        if i % 11 == 0 and len(r["output"].split()) >= 40:
            lines.append(json.dumps(dict(r, output=r["output"] + " I hope this helps you.")))
        if i % 50 == 0:
            lines.append('{"broken": ')
        if i % 40 == 0:
            lines.append("")
    (d / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    copies = [json.dumps(r) for r in rows[::13]] + [json.dumps({"instruction": "x", "output": ""})]
    (d / "b.jsonl").write_text("\ufeff" + "\n".join(copies), encoding="utf-8")
    tools = json.loads((src / "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))[:60]
    (d / "c.json").write_text(json.dumps(tools, indent=1), encoding="utf-8")
    c4 = (src / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()[:80]
    with gzip.open(d / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(c4) + "\n")
    wiki = (src / "wiki_demo.txt").read_text(encoding="utf-8").splitlines()[:60]
    (d / "e.txt").write_text("\n".join(wiki) + "\n", encoding="utf-8")
    return [str(d / n) for n in ("a.jsonl", "b.jsonl", "c.json", "d.jsonl.gz", "e.txt")]


SETTINGS: dict[str, dict[str, Any]] = {
    # ratios; near-dedup; an exact count for test (the count pass runs across shards)
    "near_dedup": {"near_dedup": True, "valid": 0.1, "test": 3},
    # counts only, exact dedup only
    "counts": {"valid": 7, "test": 5, "seed": 3},
}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _shards(corpus: list[str], model: Path, root: Path, n: int, **settings: Any) -> list[Path]:
    out = []
    for i in range(n):
        report = prepare_shard(
            corpus, out=root / f"shard{i}", shard=(i, n), model=model, threads=2, **settings
        )
        assert (report.shard, report.shards) == (i, n)
        out.append(root / f"shard{i}")
    return out


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_merge_of_any_shard_count_is_the_one_machine_artifact(
    tmp_path: Path, tiny_model: Path, corpus: list[str], name: str
) -> None:
    settings = SETTINGS[name]
    local = ftx.prepare(corpus, out=tmp_path / "local", model=tiny_model, **settings)
    assert local.duplicates > 0 and local.rejected > 0
    if settings.get("near_dedup"):
        assert local.rejects.get("near_duplicate", 0) > 0
    want = _files(tmp_path / "local")
    for n in (1, 2, 3, 7):
        shards = _shards(corpus, tiny_model, tmp_path / f"n{n}", n, **settings)
        rows = [json.loads((s / "manifest.json").read_text())["rows"] for s in shards]
        assert sum(rows) == local.records_read
        if n > 1:
            assert sum(r > 0 for r in rows) > 1, "the work is shared"
        # any order, a partition of a few KiB: many spill files
        merged = merge(shards[::-1], out=tmp_path / f"merged{n}", memory_mb=1)
        got = _files(tmp_path / f"merged{n}")
        assert sorted(got) == sorted(want)
        differ = [f for f in want if got[f] != want[f]]
        assert not differ, f"N={n}: {differ} differ from the one-machine artifact"
        assert merged.provenance == local.provenance
        assert merged.accepted == local.accepted and merged.duplicates == local.duplicates


def test_a_big_json_lines_file_is_split_between_shards(
    tmp_path: Path, tiny_model: Path, corpus: list[str]
) -> None:
    shards = _shards(corpus[:1], tiny_model, tmp_path, 3)
    parts = [json.loads((s / "manifest.json").read_text())["parts"] for s in shards]
    regions = [p[0]["region"] for p in parts]
    assert regions[0]["start"] == 0 and all(r["lines"] > 0 for r in regions)
    assert [r["start"] for r in regions[1:]] == [r["end"] for r in regions[:-1]]
    assert regions[-1]["end"] == Path(corpus[0]).stat().st_size


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, corpus: list[str]) -> Path:
    root = tmp_path_factory.mktemp("three")
    _shards(corpus, tiny_model, root, 3)
    return root


def test_a_missing_or_doubled_shard_is_refused_by_name(tmp_path: Path, three: Path) -> None:
    with pytest.raises(DataError, match=r"missing 1/3"):
        merge([three / "shard0", three / "shard2"], out=tmp_path / "out")
    shutil.copytree(three / "shard1", tmp_path / "again")
    with pytest.raises(DataError, match=r"shard 1/3 is given twice"):
        merge(
            [three / "shard0", three / "shard1", tmp_path / "again", three / "shard2"],
            out=tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


def test_shards_of_other_settings_or_a_changed_file_are_refused(
    tmp_path: Path, three: Path, tiny_model: Path, corpus: list[str]
) -> None:
    prepare_shard(corpus, out=tmp_path / "other1", shard="1/3", model=tiny_model, seed=9)
    with pytest.raises(DataError, match="other inputs, options"):
        merge([three / "shard0", tmp_path / "other1", three / "shard2"], out=tmp_path / "out")
    bad = tmp_path / "bad1"
    shutil.copytree(three / "shard1", bad)
    tokens = bytearray((bad / "tokens.bin").read_bytes())
    tokens[5] ^= 1
    (bad / "tokens.bin").write_bytes(bytes(tokens))
    with pytest.raises(DataError, match=r"tokens.bin: changed since the shard was written"):
        merge([three / "shard0", bad, three / "shard2"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="not a shard"):
        merge([tmp_path], out=tmp_path / "out")


def test_outputs_are_only_ftx_own(
    tmp_path: Path, three: Path, tiny_model: Path, corpus: list[str]
) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    shards = [three / f"shard{i}" for i in range(3)]
    with pytest.raises(ConfigError, match="not a prepared artifact or shard"):
        merge(shards, out=user)
    with pytest.raises(ConfigError, match="not a prepared artifact or shard"):
        prepare_shard(corpus, out=user, shard="0/1", model=tiny_model)
    assert (user / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="contains the input"):
        merge(shards, out=three)
    # its own artifact is replaced, and a second merge is a cache hit
    merge(shards, out=tmp_path / "art")
    assert merge(shards, out=tmp_path / "art").cached


def test_the_cli_shards_and_merges(tmp_path: Path, tiny_model: Path, corpus: list[str]) -> None:
    env = os.environ | {"FTX_NUM_THREADS": "1"}

    def ftx_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ftx.cli", *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
        )

    for i in range(2):
        done = ftx_cli("prepare", *corpus, "-m", tiny_model, "--shard", f"{i}/2", "-o",
                       tmp_path / f"s{i}", "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["shard"] == i
    done = ftx_cli("merge", tmp_path / "s0", tmp_path / "s1", "-o", tmp_path / "m", "--json")
    assert done.returncode == 0, done.stderr
    local = ftx_cli("prepare", *corpus, "-m", tiny_model, "-o", tmp_path / "l", "--json")
    assert json.loads(done.stdout)["provenance"] == json.loads(local.stdout)["provenance"]
    assert _files(tmp_path / "m") == _files(tmp_path / "l")
    bad = ftx_cli("prepare", *corpus, "-m", tiny_model, "--shard", "2/2", "-o", tmp_path / "x")
    assert bad.returncode == 2 and "0 <= I < N" in bad.stderr
    missing = ftx_cli("merge", tmp_path / "s1", "-o", tmp_path / "m2")
    assert missing.returncode == 1 and "missing 0/2" in missing.stderr

"""Inputs given as URLs: fetched through fsspec, named by their URL in the artifact, hashed by the
bytes fetched; sharded and merged like local files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import ftx
from ftx.preparation import merge, prepare_shard

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def chat_file(tmp_path: Path, shared: Path) -> Path:
    rows = json.loads(
        (shared / "datasets/llama_factory/alpaca_en_demo.json").read_text(encoding="utf-8")
    )[:120]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:10]), encoding="utf-8")
    return path


def test_a_url_is_read_named_and_hashed_as_its_file(
    tmp_path: Path, tiny_model: Path, chat_file: Path
) -> None:
    url = "memory://ftx-test/alpaca.jsonl"
    with fsspec.open(url, "wb") as f:
        f.write(chat_file.read_bytes())
    remote = ftx.prepare(url, out=tmp_path / "remote", model=tiny_model)
    local = ftx.prepare(chat_file, out=tmp_path / "local", model=tiny_model)
    [named] = remote.manifest["inputs"]
    assert named["path"] == url
    assert named["sha256"] == hashlib.sha256(chat_file.read_bytes()).hexdigest()
    assert remote.accepted == local.accepted == 120 and remote.duplicates == 10
    for name in ("train.tokens.npy", "train.mask.npy", "train.offsets.npy"):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    rejects = (tmp_path / "remote" / "rejects.jsonl").read_text()
    assert json.loads(rejects.splitlines()[0])["file"] == url


def test_urls_shard_and_merge_into_the_one_machine_artifact(
    tmp_path: Path, tiny_model: Path, chat_file: Path
) -> None:
    urls = [chat_file.as_uri(), f"file://{chat_file.parent}/*.jsonl"]
    local = ftx.prepare(urls, out=tmp_path / "local", model=tiny_model, valid=0.1)
    shards = [
        prepare_shard(urls, out=tmp_path / f"s{i}", shard=(i, 3), model=tiny_model, valid=0.1)
        for i in range(3)
    ]
    merged = merge([s.out_dir for s in shards], out=tmp_path / "merged")
    assert merged.provenance == local.provenance and local.duplicates == 10 + 130
    for p in (tmp_path / "local").iterdir():
        assert (tmp_path / "merged" / p.name).read_bytes() == p.read_bytes(), p.name
    with pytest.raises(ftx.errors.ConfigError, match="no file at"):
        ftx.prepare("memory://ftx-test/none.jsonl", out=tmp_path / "x", model=tiny_model)

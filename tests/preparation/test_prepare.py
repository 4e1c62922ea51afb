"""`ftx.prepare` end to end on real files: counts, rejects, splits, cache, determinism."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ftx


def _ids(model: Path) -> dict[str, int]:
    tok = json.loads((model / "tokenizer.json").read_text())
    return {t["content"]: t["id"] for t in tok["added_tokens"]}


def test_example_dataset_counts_and_rejects(tmp_path: Path, example_data: Path, tiny_model: Path):
    r = ftx.prepare(example_data, model=tiny_model, out=tmp_path / "out", valid=0.1)
    assert r.records_read == 404
    assert r.duplicates == 1
    assert r.rejects == {"bad_json": 1, "nothing_to_train": 1, "unknown_role": 1}
    assert r.accepted == 400
    assert 20 < r.splits["valid"].records < 60
    assert r.splits["train"].records + r.splits["valid"].records == 400
    lines = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    rejects = [x for x in lines if x["code"] != "duplicate"]
    assert [x["line"] for x in rejects] == [51, 121, 201]
    # The duplicate is there too (counted in `duplicates`, not in `rejects`), naming the record
    # it copies, which was kept.
    (dup,) = [x for x in lines if x["code"] == "duplicate"]
    assert dup["kept_file"] == str(example_data) and dup["kept_line"] < dup["line"]
    assert f":{dup['kept_line']}" in dup["message"]
    for x in rejects:
        assert x["file"] == str(example_data)
        assert set(x) >= {"file", "line", "offset", "code", "message", "record"}
        assert x["message"]
    # The offset points at the start of the rejected line.
    raw = example_data.read_bytes()
    assert raw[rejects[0]["offset"] :].startswith(
        b'{"messages": [{"role": "user", "content": "Hi"}'
    )
    assert "narrator" in rejects[2]["message"]


def test_arrays_are_memory_mapped_views_with_assistant_masks(
    tmp_path: Path, example_data: Path, tiny_model: Path
):
    ftx.prepare(example_data, model=tiny_model, out=tmp_path / "out")
    ds = ftx.load_dataset(tmp_path / "out", split="train")
    assert len(ds) == 400
    assert isinstance(ds.tokens, np.memmap)
    ids, mask = ds[0]
    assert ids.dtype == np.uint32 and mask.dtype == np.uint8
    assert np.shares_memory(ids, ds.tokens) and np.shares_memory(mask, ds.mask)
    special = _ids(tiny_model)
    start, end = special["<|im_start|>"], special["<|im_end|>"]
    for ids, mask in ds:
        assert ids[0] == start
        assert set(np.unique(mask)) <= {0, 1}
        trained = ids[mask == 1]
        assert len(trained) > 0
        # Every trained run ends with the end-of-turn token; no header token is trained.
        assert trained[-1] == end
        assert start not in trained
        # The number of trained end-of-turn tokens equals the number of assistant turns:
        # user and system turns (which also end with <|im_end|>) are not trained.
        assert (trained == end).sum() < (ids == end).sum()
    assert ds.lengths().sum() == ds.num_tokens


def test_rerun_is_a_cache_hit_and_changes_rebuild(
    tmp_path: Path, example_data: Path, tiny_model: Path
):
    out = tmp_path / "out"
    first = ftx.prepare(example_data, model=tiny_model, out=out)
    assert not first.cached
    again = ftx.prepare(example_data, model=tiny_model, out=out)
    assert again.cached and again.provenance == first.provenance
    reseeded = ftx.prepare(example_data, model=tiny_model, out=out, seed=1)
    assert not reseeded.cached and reseeded.provenance != first.provenance
    # A different template text (same model otherwise) must rebuild too.
    tpl = tmp_path / "t.jinja"
    tpl.write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}: {{ m.content }}<|im_end|>\n{% endfor %}"
    )
    other = ftx.prepare(example_data, model=tiny_model, out=out, seed=1, chat_template=str(tpl))
    assert not other.cached and other.provenance != reseeded.provenance
    assert other.template == str(tpl)


@pytest.mark.parametrize(
    "key, value",
    [
        ("bos_token", "<|endoftext|>"),
        ("eos_token", "<|endoftext|>"),
        ("pad_token", "<|im_end|>"),
        ("unk_token", "<|endoftext|>"),
        ("add_bos_token", True),
        ("add_eos_token", True),
    ],
)
def test_an_edited_tokenizer_config_rebuilds(
    tmp_path: Path, example_data: Path, tiny_model: Path, key: str, value: object
) -> None:
    """tokenizer_config.json's special tokens and BOS/EOS flags change what is written, so a
    change to any of them is a new provenance, never a stale cache hit."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    out = tmp_path / "out"
    first = ftx.prepare(example_data, model=model, out=out)
    config_path = model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    assert config.get(key) != value
    config_path.write_text(json.dumps({**config, key: value}))
    again = ftx.prepare(example_data, model=model, out=out)
    assert not again.cached and again.provenance != first.provenance


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_output_is_byte_identical_for_one_and_two_threads(
    tmp_path: Path, example_data: Path, tiny_model: Path
):
    big = tmp_path / "big.jsonl"
    lines = example_data.read_text().splitlines()
    # Enough records for many chunks, so the threads really interleave.
    big.write_text("\n".join(f"{line}" for _ in range(8) for line in lines) + "\n")
    a = ftx.prepare(big, model=tiny_model, out=tmp_path / "a", threads=1, valid=0.1, dedup=False)
    b = ftx.prepare(big, model=tiny_model, out=tmp_path / "b", threads=2, valid=0.1, dedup=False)
    assert a.accepted == b.accepted
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    # The manifest names its inputs and options, identical here; only the folder differs.
    assert da == db

"""Every real dataset under ../shared/data/datasets goes through `prepare` with real tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

import ftx

# file -> (minimum accepted records, the reject code every other record must have, if any)
DATASETS: dict[str, tuple[int, str | None]] = {
    "llama_factory/alpaca_en_demo.json": (999, None),
    "llama_factory/alpaca_zh_demo.json": (990, None),
    "llama_factory/identity.json": (91, None),
    "llama_factory/glaive_toolcall_en_demo.json": (290, None),
    "llama_factory/glaive_toolcall_zh_demo.json": (290, None),
    "llama_factory/dpo_en_demo.json": (290, None),
    "llama_factory/kto_en_demo.json": (290, None),
    "llama_factory/v1_sft_demo.jsonl": (490, None),
    "llama_factory/v1_dpo_demo.jsonl": (10, None),
    # Llama 3.1 refuses parallel tool calls (raise_exception): those 10 become rejects.
    "llama_factory/reason_tool_use_demo_50.jsonl": (40, None),
    "llama_factory/c4_demo.jsonl": (300, None),
    "llama_factory/wiki_demo.txt": (30, None),
    "fastchat/dummy_conversation.json": (490, None),
    "torchtune/alpaca_tiny.json": (100, None),
    "torchtune/chat_tiny.json": (1, None),
    "stanford_alpaca/seed_tasks.jsonl": (175, None),
    # BFCL questions come without answers: each is rejected with that reason, none crashes.
    "bfcl/BFCL_v4_simple_python.json": (0, "nothing_to_train"),
    "bfcl/BFCL_v4_multi_turn_base.json": (0, "nothing_to_train"),
}


# Llama 3's own template has no tool calls, so the run uses the real 3.1 template, which does.
FAMILIES = {"qwen3": None, "llama3": "chat_template.llama-3.1-8b-instruct.jinja"}


@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dataset_goes_through(tmp_path: Path, shared: Path, name: str, family: str) -> None:
    minimum, only_code = DATASETS[name]
    src = shared / "datasets" / name
    model = shared / "tokenizers" / family
    template = FAMILIES[family]
    kw = {"chat_template": str(model / template)} if template else {}
    if minimum == 0:
        with pytest.raises(ftx.DataError, match="no usable record"):
            ftx.prepare(src, model=model, out=tmp_path / "o", **kw)
        kept = (tmp_path / "o.rejects.jsonl").read_text().splitlines()
        assert kept and all(f'"code":"{only_code}"' in line for line in kept)
        return
    r = ftx.prepare(src, model=model, out=tmp_path / "o", **kw)
    assert r.accepted + r.duplicates >= minimum, r.rejects
    for ids, mask in ftx.load_dataset(r.out_dir):
        assert mask.any()
        assert len(ids) == len(mask)


def test_template_without_tool_support_stops_the_run_naming_it(tmp_path: Path, shared: Path):
    src = shared / "datasets" / "llama_factory" / "glaive_toolcall_en_demo.json"
    with pytest.raises(ftx.TemplateError, match=r"chat template .*llama3.* failed on \d+ of"):
        ftx.prepare(src, model=shared / "tokenizers" / "llama3", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "o.rejects.jsonl").stat().st_size > 0

"""ftx's own tool-calling task: determinism, the split by template, records a template renders."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ftx.errors import ConfigError
from ftx.evaluation.toolcalls import ToolCall, parse_tool_calls
from ftx.tasks import toolcall as tc

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tokenizers"
SMOLLM2_TEMPLATE = SHARED / "smollm2" / "chat_template.jinja"
QWEN25_TEMPLATE = SHARED / "qwen2_5" / "chat_template.jinja"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _as_regex(template: str) -> re.Pattern[str]:
    """A template as a pattern matching every request made from it."""
    parts = re.split(r"\{\w+\}", template)
    return re.compile(".+?".join(re.escape(p) for p in parts) + r"\Z")


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    a = tc.write_dataset(tmp_path / "a", seed=7, train=120, valid=12, test=24)
    tc.write_dataset(tmp_path / "b", seed=7, train=120, valid=12, test=24)
    c = tc.write_dataset(tmp_path / "c", seed=8, train=120, valid=12, test=24)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a")["train.jsonl"] != _digests(tmp_path / "c")["train.jsonl"]
    assert a.manifest["templates"] != c.manifest["templates"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "ftx_task.json",
        "references.jsonl",
        "test.jsonl",
        "train.jsonl",
        "valid.jsonl",
    ]
    assert json.loads((tmp_path / "a" / "ftx_task.json").read_text()) == a.manifest
    assert {s: len(_rows(tmp_path / "a" / f"{s}.jsonl")) for s in tc.SPLITS} == a.records


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_test_phrasings_never_appear_in_training(seed: int) -> None:
    splits = tc.template_splits(seed)
    assert not set(splits["train"]) & set(splits["test"])
    assert not set(splits["train"]) & set(splits["valid"])
    assert not set(splits["valid"]) & set(splits["test"])
    for split in tc.SPLITS:
        # every function is asked for in every split
        assert {t.split("/")[0] for t in splits[split]} == set(tc.TEMPLATES)
    examples = tc.generate(seed, {"train": 300, "valid": 30, "test": 60})
    held_out = {
        t: _as_regex(tc.TEMPLATES[t.split("/")[0]][int(t.split("/")[1])]) for t in splits["test"]
    }
    for e in examples:
        assert e.template in splits[e.split]
        if e.split == "train":
            # the request matches no held-out phrasing, not even by accident
            assert not [t for t, rx in held_out.items() if rx.match(e.request)], e.request
    train = {e.request for e in examples if e.split == "train"}
    test = [e.request for e in examples if e.split == "test"]
    assert len(set(test)) == len(test) == 60
    assert not train & set(test)


def test_without_valid_records_the_valid_phrasings_train_and_test_stays_unseen() -> None:
    with_valid, without = tc.template_splits(0), tc.template_splits(0, valid=False)
    assert without["test"] == with_valid["test"]
    assert without["valid"] == []
    assert set(without["train"]) == set(with_valid["train"]) | set(with_valid["valid"])
    train = {e.template for e in tc.generate(0, {"train": 400, "test": 12}) if e.split == "train"}
    assert set(with_valid["valid"]) <= train
    assert not train & set(with_valid["test"])


def test_calls_carry_typed_arguments_that_follow_the_schema() -> None:
    schemas = {f["name"]: f["parameters"] for f in tc.FUNCTIONS}
    types = {"string": str, "integer": int, "number": (int, float)}
    for e in tc.generate(3, {"train": 200, "valid": 0, "test": 40}):
        params = schemas[e.name]
        assert set(params["required"]) <= set(e.arguments) <= set(params["properties"])
        for k, v in e.arguments.items():
            spec = params["properties"][k]
            assert isinstance(v, types[spec["type"]]) and not isinstance(v, bool)
            assert v in spec.get("enum", [v])
            # what is asked for is in the request (currencies by name, units capitalized)
            if isinstance(v, str) and "currency" not in k:
                assert v.lower() in e.request.lower()
        if e.name == "convert_currency":
            assert e.arguments["from_currency"] != e.arguments["to_currency"]


def test_references_hold_the_prompt_and_the_expected_call(tmp_path: Path) -> None:
    tc.write_dataset(tmp_path / "d", seed=0, train=60, valid=12, test=24, style="inline")
    refs = _rows(tmp_path / "d" / "references.jsonl")
    test = _rows(tmp_path / "d" / "test.jsonl")
    assert [r["split"] for r in refs] == ["valid"] * 12 + ["test"] * 24
    for ref, row in zip([r for r in refs if r["split"] == "test"], test, strict=True):
        assert row["messages"][:-1] == ref["messages"]
        answer = row["messages"][-1]
        assert answer["role"] == "assistant"
        # Read back by the scorer `ftx evaluate` uses.
        assert parse_tool_calls(answer["content"]) == [ToolCall(**ref["expected"])]


def test_tools_style_is_openai_shaped(tmp_path: Path) -> None:
    tc.write_dataset(tmp_path / "d", seed=0, train=12, valid=6, test=6, style="tools")
    row = _rows(tmp_path / "d" / "train.jsonl")[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    call = row["messages"][-1]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] in tc.TEMPLATES
    assert [t["function"]["name"] for t in row["tools"]] == list(tc.TEMPLATES)
    ref = _rows(tmp_path / "d" / "references.jsonl")[0]
    assert ref["tools"] == row["tools"] and ref["messages"][-1]["role"] == "user"


def test_renders_tools_tells_which_style_a_template_needs() -> None:
    if not SMOLLM2_TEMPLATE.is_file():
        pytest.skip(f"{SHARED} is missing")
    # SmolLM2 renders only role and content: tools and tool_calls would be dropped.
    assert not tc.renders_tools(SMOLLM2_TEMPLATE.read_text())
    assert tc.renders_tools(QWEN25_TEMPLATE.read_text())


def test_inline_records_render_with_smollm2s_template(tmp_path: Path) -> None:
    jinja2 = pytest.importorskip("jinja2")
    if not SMOLLM2_TEMPLATE.is_file():
        pytest.skip(f"{SHARED} is missing")
    template = jinja2.Environment().from_string(SMOLLM2_TEMPLATE.read_text())
    row = tc.record(tc.generate(0, {"train": 1})[0], "inline")
    text = template.render(messages=row["messages"], add_generation_prompt=False)
    # the function list replaces SmolLM2's default system prompt; the call is the reply
    assert "named SmolLM" not in text
    assert "<tools>\nget_weather(city: string" in text
    assert text.endswith(row["messages"][-1]["content"] + "<|im_end|>\n")


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="style"):
        tc.write_dataset(tmp_path / "x", style="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="distinct"):
        tc.generate(0, {"test": 100_000})
    tc.write_dataset(tmp_path / "d", train=6, valid=6, test=6)
    with pytest.raises(ConfigError, match="already exists"):
        tc.write_dataset(tmp_path / "d", train=6, valid=6, test=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]

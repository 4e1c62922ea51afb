"""Tool-call parsing, references of held-out records, and the metrics, on crafted strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftx.errors import DataError
from ftx.evaluation.heldout import HeldOut, read_heldout
from ftx.evaluation.scoring import rates, score
from ftx.evaluation.toolcalls import ToolCall, parse_tool_calls, same_value

WEATHER = ToolCall("get_weather", {"city": "Paris", "days": 3})


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n'
        "</tool_call>",
        # unterminated tag (generation stopped at EOS right after the JSON)
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": 3.0}}',
        '[{"name": "get_weather", "parameters": {"days": 3, "city": "Paris"}}]',
        'Sure! ```json\n{"type": "function", "function": {"name": "get_weather", '
        '"arguments": "{\\"city\\": \\"Paris\\", \\"days\\": 3}"}}\n```',
        'I will call it: {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}} ok',
    ],
)
def test_tool_calls_are_read_in_every_usual_form(text: str) -> None:
    calls = parse_tool_calls(text)
    assert calls is not None and len(calls) == 1
    assert calls[0].name == "get_weather"
    assert same_value(calls[0].arguments, WEATHER.arguments)


@pytest.mark.parametrize(
    "text",
    [
        "The weather in Paris is sunny.",
        '{"name": "get_weather", "arguments": {"city": "Paris"',  # cut off
        '{"city": "Paris"}',  # arguments without a name
        '{"name": "", "arguments": {}}',
        '{"name": "f", "arguments": "not json"}',
        '{"name": "f", "arguments": [1, 2]}',
    ],
)
def test_text_without_a_well_formed_call_has_none(text: str) -> None:
    assert parse_tool_calls(text) is None


def test_several_calls_keep_their_order() -> None:
    text = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>'
    )
    calls = parse_tool_calls(text)
    assert calls == [ToolCall("a", {}), ToolCall("b", {"x": 1})]


def test_json_equality_is_by_value_but_booleans_are_not_numbers() -> None:
    assert same_value({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not same_value({"a": True}, {"a": 1})
    assert not same_value({"a": "1"}, {"a": 1})
    assert not same_value({"a": 1}, {"a": 1, "b": None})
    assert not same_value([1, 2], [2, 1])


def _tool_example(*calls: ToolCall) -> HeldOut:
    return HeldOut(1, [{"role": "user", "content": "q"}], None, "", list(calls))


def _text_example(reference: str) -> HeldOut:
    return HeldOut(1, [{"role": "user", "content": "q"}], None, reference, None)


def test_text_scores_exact_match_and_contains() -> None:
    ex = _text_example("The capital of France is Paris.")
    s = score("  The capital of France\nis Paris. ", ex)
    assert s.exact_match and s.contains and s.tool_json_valid is None
    s = score("Well, the answer: The capital of France is Paris. Anything else?", ex)
    assert not s.exact_match and s.contains
    s = score("the capital of france is paris.", ex)
    assert not s.exact_match and not s.contains


def test_tool_scores_separate_json_name_and_arguments() -> None:
    ex = _tool_example(WEATHER)
    right = score(
        '<tool_call>{"name": "get_weather", "arguments": {"days": 3, "city": "Paris"}}', ex
    )
    assert (right.exact_match, right.contains, right.tool_json_valid) == (True, True, True)
    assert right.tool_name and right.tool_arguments and right.calls == [WEATHER]

    wrong_args = score('{"name": "get_weather", "arguments": {"city": "Lyon", "days": 3}}', ex)
    assert wrong_args.tool_json_valid and wrong_args.tool_name
    assert not wrong_args.tool_arguments and not wrong_args.exact_match

    wrong_name = score('{"name": "get_time", "arguments": {"city": "Paris", "days": 3}}', ex)
    assert wrong_name.tool_json_valid and not wrong_name.tool_name
    assert wrong_name.tool_arguments and not wrong_name.exact_match

    broken = score('{"name": "get_weather", "arguments": {"city": "Par', ex)
    assert broken.tool_json_valid is False and not broken.tool_name and not broken.contains

    extra = score(
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}'
        '{"name": "get_time", "arguments": {}}',
        ex,
    )
    assert extra.contains and not extra.exact_match and not extra.tool_name


def test_rates_average_tool_metrics_over_tool_examples_only() -> None:
    scores = [
        score(
            '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
            _tool_example(WEATHER),
        ),
        score('{"name": "get_weather", "arguments": {}}', _tool_example(WEATHER)),
        score("hello", _text_example("hello")),
        score("bye", _text_example("hello")),
    ]
    r = rates(scores)
    assert (r.examples, r.tool_examples) == (4, 2)
    assert r.exact_match == 0.5 and r.contains == 0.5
    assert (r.tool_json_valid, r.tool_name_accuracy, r.tool_arguments_accuracy) == (1.0, 1.0, 0.5)
    text_only = rates([score("hello", _text_example("hello"))])
    assert text_only.tool_examples == 0 and text_only.tool_name_accuracy is None


def _write(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_references_come_from_the_last_assistant_message(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    path = _write(
        tmp_path / "h.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"city": "Paris", "days": 3}',
                                },
                            }
                        ],
                    },
                ],
                "tools": json.dumps(tools),
            },
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": '<tool_call>{"name": "get_weather", "arguments": {}}'
                        "</tool_call>",
                    },
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
                ]
            },
        ],
    )
    a, b, c = read_heldout(path)
    assert [m["role"] for m in a.messages] == ["system", "user"]
    assert a.tools == tools and a.calls == [WEATHER]
    assert json.loads(a.reference) == WEATHER.to_dict()
    assert len(b.messages) == 3 and b.calls == [ToolCall("get_weather", {})]
    assert b.reference.startswith("<tool_call>")
    assert c.calls is None and c.reference == "b" and c.line == 3
    assert len(read_heldout(path, limit=2)) == 2


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"text": "x"}, "messages"),
        ({"messages": [{"role": "user", "content": "q"}]}, "no assistant message"),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "nothing before"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "tool_calls": [{"x": 1}]},
                ]
            },
            "tool_calls",
        ),
    ],
)
def test_bad_records_name_file_and_line(tmp_path: Path, record: Any, reason: str) -> None:
    path = _write(
        tmp_path / "bad.jsonl",
        [
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            record,
        ],
    )
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: .*{reason}"):
        read_heldout(path)

"""Self-test of a chat template: synthetic conversations rendered and masked as ``prepare`` does.

``ftx prepare --check-template`` prints each render with the trained characters colored, so a
person can see at a glance that the assistant's turns (and their end-of-turn token) are trained
and nothing else is. A conversation the template accepts but that cannot be masked is a failure;
one the template refuses (``raise_exception``: no system role, no tools) is reported as skipped,
since a model need not support every shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftx import _core
from ftx.model_folder import checked_tokenizer_folder

if TYPE_CHECKING:
    from ftx._core import _Reject

_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}

# Each one exercises a shape templates treat differently; the names are what the report shows.
CONVERSATIONS: dict[str, dict[str, Any]] = {
    "single turn": {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
        ]
    },
    "multi-turn": {
        "messages": [
            {"role": "user", "content": "Name a prime number."},
            {"role": "assistant", "content": "7 is prime."},
            {"role": "user", "content": "And an even one?"},
            {"role": "assistant", "content": "2 is the only even prime."},
        ]
    },
    "system prompt": {
        "messages": [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": "Air scatters blue light more than red light."},
        ]
    },
    "tool call": {
        "tools": [_WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "Is it raining in Lyon?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Lyon"}},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "name": "get_weather",
                "content": '{"rain": true, "temp_c": 14}',
            },
            {"role": "assistant", "content": "Yes, it is raining in Lyon (14 °C)."},
        ],
    },
    "think block": {
        "messages": [
            {"role": "user", "content": "What is 17 + 25?"},
            {
                "role": "assistant",
                "reasoning_content": "17 + 25: 17 + 20 = 37, 37 + 5 = 42.",
                "content": "17 + 25 = 42.",
            },
            {"role": "user", "content": "Times two?"},
            {
                "role": "assistant",
                "reasoning_content": "42 * 2 = 84.",
                "content": "84.",
            },
        ]
    },
}


@dataclass(frozen=True)
class Segment:
    """A run of rendered text, trained or not."""

    text: str
    trained: bool


@dataclass(frozen=True)
class CheckResult:
    """The outcome for one synthetic conversation."""

    name: str
    segments: tuple[Segment, ...] = ()
    trained_tokens: int = 0
    tokens: int = 0
    # "ok"; "refused" (the template raised: the model does not support this shape);
    # "unsupported" (the template ignores tools altogether); "failed" (cannot be masked).
    status: str = "ok"
    reason: str = ""


def _segments(text: str, trained: Sequence[Sequence[int]]) -> tuple[Segment, ...]:
    out: list[Segment] = []
    pos = 0
    for start, end in trained:
        if start > pos:
            out.append(Segment(text[pos:start], False))
        out.append(Segment(text[start:end], True))
        pos = end
    if pos < len(text):
        out.append(Segment(text[pos:], False))
    return tuple(out)


def check_template(
    *,
    model: str | Path | None = None,
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    train_on: str = "assistant",
) -> tuple[str, list[CheckResult]]:
    """Renders and masks every synthetic conversation; returns the template's label and results."""
    records = [json.dumps(c) for c in CONVERSATIONS.values()]
    if model is not None:
        model = checked_tokenizer_folder(Path(model))
    out = _core.preview(
        records,
        model_dir=model,
        tokenizer=tokenizer,
        chat_template=chat_template,
        train_on=train_on,
    )
    results = []
    for name, item in zip(CONVERSATIONS, out["items"], strict=True):
        if "reject" not in item:
            results.append(
                CheckResult(
                    name,
                    _segments(item["text"], item["trained"]),
                    trained_tokens=sum(item["mask"]),
                    tokens=len(item["ids"]),
                )
            )
            continue
        reject = item["reject"]
        if reject["code"] == "bad_role_order" or _raised(reject):
            results.append(CheckResult(name, status="refused", reason=_reason(reject)))
        elif name == "tool call" and not _renders_tools(model, tokenizer, chat_template):
            reason = "the template renders neither the tools nor the tool calls"
            results.append(CheckResult(name, status="unsupported", reason=reason))
        else:
            results.append(CheckResult(name, status="failed", reason=_reason(reject)))
    return out["template"], results


def _renders_tools(
    model: str | Path | None, tokenizer: str | Path | None, chat_template: str | None
) -> bool:
    # Rendered with every token trained, no span is needed: this sees what the template writes.
    out = _core.preview(
        [json.dumps(CONVERSATIONS["tool call"])],
        model_dir=model,
        tokenizer=tokenizer,
        chat_template=chat_template,
        train_on="all",
    )
    item = out["items"][0]
    return "reject" in item or "get_weather" in item["text"]


def _raised(reject: _Reject) -> bool:
    # The template's own raise_exception gives its bare message; a render error of minijinja
    # names the place in the template ("(in chat:12)").
    return reject["code"] == "template_error" and "(in chat" not in reject["message"]


def _reason(reject: _Reject) -> str:
    return f"{reject['code']}: {reject['message']}"

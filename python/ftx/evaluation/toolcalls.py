"""Tool calls as data: read from generated text, and from the reference messages of a record.

Generated text is read leniently, the way tool-calling runtimes do: OpenAI-style JSON objects
``{"name": ..., "arguments": {...}}`` (``parameters`` is accepted too, as Llama 3.x templates
write it), alone or in a list, inside ``<tool_call>...</tool_call>`` tags, a code fence, or
bare in the text; ``{"type": "function", "function": {...}}`` wrappers are unwrapped and
arguments given as a JSON string (OpenAI's wire format) are decoded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)
JSON_START = re.compile(r"[\[{]")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


def _call(obj: Any) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        return None
    return ToolCall(name, args)


def as_calls(value: Any) -> list[ToolCall] | None:
    """A call or a list of calls; None unless every item is a well-formed call."""
    items = value if isinstance(value, list) else [value]
    calls = [_call(v) for v in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def _json_values(text: str) -> list[Any]:
    """Every JSON object or array embedded in ``text``, outermost first, left to right."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    while m := JSON_START.search(text, i):
        try:
            value, end = decoder.raw_decode(text, m.start())
        except ValueError:
            i = m.start() + 1
            continue
        values.append(value)
        i = end
    return values


def parse_tool_calls(text: str) -> list[ToolCall] | None:
    """The tool calls written in ``text``, in order; None when no well-formed call is found."""
    blocks = TAGGED.findall(text) or FENCED.findall(text) or [text]
    calls: list[ToolCall] = []
    for block in blocks:
        for value in _json_values(block):
            calls.extend(as_calls(value) or [])
    return calls or None


def same_value(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), but a boolean is never a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def same_call(a: ToolCall, b: ToolCall) -> bool:
    return a.name == b.name and same_value(a.arguments, b.arguments)

"""Held-out prompts with references, from a JSONL file of chat records.

Each line is a record in the OpenAI messages format (``{"messages": [...], "tools": [...]}``).
Its last assistant message is the reference; everything before it is the prompt. A reference
is a tool call when the message has ``tool_calls`` or its content is one (JSON, possibly in
``<tool_call>`` tags); otherwise it is text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.errors import DataError, FtxFileNotFoundError
from ftx.evaluation.toolcalls import ToolCall, as_calls, parse_tool_calls


@dataclass(frozen=True)
class HeldOut:
    """One held-out example: the prompt messages and what the assistant should answer."""

    line: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    reference: str
    calls: list[ToolCall] | None


def _text(content: Any) -> str:
    """Message content as text; a list of parts contributes its text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", p.get("value", ""))) for p in content if isinstance(p, dict)
        )
    raise ValueError(f"content must be a string or a list of parts, not {type(content).__name__}")


def _tools(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = record.get("tools")
    if isinstance(tools, str):  # some datasets store the schema list as a JSON string
        tools = json.loads(tools)
    if tools is not None and not isinstance(tools, list):
        raise ValueError("tools must be a list of function schemas")
    return tools or None


def _example(record: Any, line: int) -> HeldOut:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ValueError('a record must be an object with a "messages" list')
    messages: list[dict[str, Any]] = record["messages"]
    last = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
        default=None,
    )
    if last is None:
        raise ValueError("no assistant message to take as the reference")
    if last == 0:
        raise ValueError("nothing before the reference assistant message to prompt with")
    answer = messages[last]
    text = _text(answer.get("content"))
    calls = None
    if answer.get("tool_calls"):
        calls = as_calls(answer["tool_calls"])
        if calls is None:
            raise ValueError("tool_calls must be calls with a name and object arguments")
    elif text.strip():
        calls = parse_tool_calls(text)
    if calls is not None and not text.strip():
        shown = [c.to_dict() for c in calls]
        text = json.dumps(shown[0] if len(shown) == 1 else shown, ensure_ascii=False)
    return HeldOut(line, messages[:last], _tools(record), text, calls)


def read_heldout(path: str | Path, limit: int | None = None) -> list[HeldOut]:
    """The examples of a JSONL file (the first ``limit`` of them); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FtxFileNotFoundError(f"{path}: no such file of held-out chat records")
    examples: list[HeldOut] = []
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if limit is not None and len(examples) >= limit:
                break
            if not raw.strip():
                continue
            try:
                examples.append(_example(json.loads(raw), n))
            except ValueError as e:
                raise DataError(f"{path}:{n}: {e}") from None
    if not examples:
        raise DataError(f"{path}: no held-out records")
    return examples

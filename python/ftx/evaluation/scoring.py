"""Generated answers against references: per-example scores and their rates.

Text references: ``exact_match`` compares after collapsing whitespace; ``contains`` asks the
reference to appear in the output. Tool-call references: the calls are parsed from the output
(``toolcalls``); ``tool_json_valid`` means a well-formed call was found, ``tool_name``
that the function names match in order, ``tool_arguments`` that the arguments match (JSON
equality), ``exact_match`` both, and ``contains`` that every reference call is among the calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ftx.evaluation.heldout import HeldOut
from ftx.evaluation.toolcalls import ToolCall, parse_tool_calls, same_call, same_value


@dataclass(frozen=True)
class Score:
    """One output. The ``tool_*`` fields are None when the reference is not a tool call."""

    exact_match: bool
    contains: bool
    tool_json_valid: bool | None = None
    tool_name: bool | None = None
    tool_arguments: bool | None = None
    calls: list[ToolCall] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["calls"] = None if self.calls is None else [c.to_dict() for c in self.calls]
        return d


@dataclass(frozen=True)
class Rates:
    """Fractions (0 to 1) of examples; tool rates are over the tool-call examples only and
    are None when there are none."""

    examples: int
    exact_match: float
    contains: float
    tool_examples: int
    tool_json_valid: float | None
    tool_name_accuracy: float | None
    tool_arguments_accuracy: float | None


def _squash(s: str) -> str:
    return " ".join(s.split())


def score(output: str, example: HeldOut) -> Score:
    want = example.calls
    if want is None:
        out, ref = _squash(output), _squash(example.reference)
        return Score(exact_match=out == ref, contains=ref in out)
    got = parse_tool_calls(output) or []
    names = [c.name for c in got] == [c.name for c in want]
    args = len(got) == len(want) and all(
        same_value(g.arguments, w.arguments) for g, w in zip(got, want, strict=True)
    )
    return Score(
        exact_match=names and args,
        contains=all(any(same_call(g, w) for g in got) for w in want),
        tool_json_valid=bool(got),
        tool_name=names,
        tool_arguments=args,
        calls=got or None,
    )


def _rate(flags: Sequence[bool | None]) -> float | None:
    seen = [f for f in flags if f is not None]
    return sum(seen) / len(seen) if seen else None


def rates(scores: Sequence[Score]) -> Rates:
    return Rates(
        examples=len(scores),
        exact_match=_rate([s.exact_match for s in scores]) or 0.0,
        contains=_rate([s.contains for s in scores]) or 0.0,
        tool_examples=sum(s.tool_json_valid is not None for s in scores),
        tool_json_valid=_rate([s.tool_json_valid for s in scores]),
        tool_name_accuracy=_rate([s.tool_name for s in scores]),
        tool_arguments_accuracy=_rate([s.tool_arguments for s in scores]),
    )

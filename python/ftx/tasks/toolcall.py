"""A seeded tool-calling task: natural-language requests answered with one function call. One
thing: the task (its functions, phrasings, generator and writer).

Six functions with JSON-schema parameters; each has ten request templates whose slots are
filled from value lists (some values have several phrasings: "euros", "EUR"). Templates, not
records, are split: per function two go to ``test``, two to ``valid`` (when valid records are
asked for), the rest to ``train``, so no test phrasing is seen in training and the test set
measures whether the skill carries over to new wordings. All text here was written for ftx.

Two ways to put the functions and the call into a chat, ``style``:

- ``"tools"``: OpenAI-shaped records (``tools`` beside the messages, the assistant's
  ``tool_calls``), for chat templates that render them (Qwen2.5, Llama 3.1, Hermes...).
- ``"inline"``: the function list in a system message inside ``<tools></tools>`` and the call as
  the assistant's text, ``<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>``. For
  templates that ignore ``tools`` and ``tool_calls``, such as SmolLM2's, which renders only
  ``role`` and ``content`` (an assistant turn with only ``tool_calls`` fails to render there:
  ``content`` is None). SmolLM2-Instruct's fine-tuning data (smoltalk's APIGen part) used these
  same two tags with a JSON list of calls, so the base model has seen this shape.

``renders_tools(template)`` tells which one a chat template needs.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ftx.errors import ConfigError
from ftx.staged_folder import check_free, staged_folder, write_json

Style = Literal["tools", "inline"]
MANIFEST = "ftx_task.json"
SPLITS = ("train", "valid", "test")
# Templates per function held out for each of valid and test.
HELD_OUT = 2
VERSION = 1


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _enum(description: str, values: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": values, "description": description}


def _function(name: str, description: str, props: dict[str, Any], required: list[str]) -> Any:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": props, "required": required},
    }


FUNCTIONS: list[dict[str, Any]] = [
    _function(
        "get_weather",
        "Current weather in a city.",
        {
            "city": _string("City name, e.g. Lisbon"),
            "unit": _enum("Temperature unit", ["celsius", "fahrenheit"]),
        },
        ["city"],
    ),
    _function(
        "set_timer",
        "Starts a countdown timer.",
        {
            "minutes": {"type": "integer", "description": "Length of the timer in minutes"},
            "label": _string("What the timer is for"),
        },
        ["minutes"],
    ),
    _function(
        "convert_currency",
        "Converts money between currencies at today's rate.",
        {
            "amount": {"type": "number", "description": "Amount to convert"},
            "from_currency": _string("ISO 4217 code of the currency converted from, e.g. EUR"),
            "to_currency": _string("ISO 4217 code of the currency converted to"),
        },
        ["amount", "from_currency", "to_currency"],
    ),
    _function(
        "send_email",
        "Sends a short email.",
        {
            "to": _string("Recipient's email address"),
            "subject": _string("Subject line"),
        },
        ["to", "subject"],
    ),
    _function(
        "add_calendar_event",
        "Adds an event to the calendar.",
        {
            "title": _string("Name of the event"),
            "date": _string("Day of the event, YYYY-MM-DD"),
            "time": _string("Start time, HH:MM on a 24-hour clock"),
        },
        ["title", "date"],
    ),
    _function(
        "search_recipes",
        "Finds recipes using an ingredient.",
        {
            "ingredient": _string("Main ingredient"),
            "max_minutes": {"type": "integer", "description": "Longest total cooking time"},
        },
        ["ingredient"],
    ),
]

# slot -> (phrasing in the request, value in the call). A slot is named after its argument.
_CURRENCY_WORDS = {
    "USD": ["US dollars", "USD", "dollars"],
    "EUR": ["euros", "EUR"],
    "GBP": ["British pounds", "GBP", "pounds sterling"],
    "JPY": ["Japanese yen", "JPY", "yen"],
    "CHF": ["Swiss francs", "CHF"],
    "CAD": ["Canadian dollars", "CAD"],
}
_CURRENCY = [(word, code) for code, words in _CURRENCY_WORDS.items() for word in words]


def _same(*values: Any) -> list[tuple[str, Any]]:
    return [(str(v), v) for v in values]


def _words(values: str) -> list[tuple[str, Any]]:
    return _same(*values.split("; "))


SLOTS: dict[str, list[tuple[str, Any]]] = {
    "city": _words(
        "Lisbon; Oslo; Nairobi; Toronto; Osaka; Lima; Cairo; Munich; Hanoi; Perth; "
        "Denver; Seville; Krakow; Montreal; Bergen; Cusco; Da Nang"
    ),
    "unit": [
        ("celsius", "celsius"),
        ("Celsius", "celsius"),
        ("fahrenheit", "fahrenheit"),
        ("Fahrenheit", "fahrenheit"),
    ],
    "minutes": _same(1, 2, 3, 5, 7, 8, 10, 12, 15, 20, 25, 30, 40, 45, 50, 60, 90),
    "label": _words(
        "check the oven; call my sister; move the car; take the bread out; "
        "water the plants; stretch; join the standup; flip the laundry; "
        "pick up the kids; turn off the heater"
    ),
    "amount": _same(5, 12, 20, 40, 75, 100, 150, 250, 999, 1200, 3000, 12.5, 49.99, 0.75),
    "from_currency": _CURRENCY,
    "to_currency": _CURRENCY,
    "to": _words(
        "ana@example.com; j.smith@example.org; team@example.net; lee.wong@example.com; "
        "office@example.org; ravi@example.net; mia.keller@example.com"
    ),
    "subject": _words(
        "Lunch on Friday; Project update; Invoice for March; Weekend plans; "
        "Meeting notes; Quick question; Flight details; Happy birthday; "
        "New office hours; Draft for review"
    ),
    "title": _words(
        "Dentist; Team lunch; Yoga class; Call with the bank; Piano lesson; Book club; "
        "Car service; Parents evening; Quarterly review; Haircut"
    ),
    "date": _words(
        "2026-01-09; 2026-02-14; 2026-03-03; 2026-04-21; 2026-05-30; 2026-06-12; "
        "2026-07-01; 2026-08-18; 2026-09-25; 2026-10-07; 2026-11-11; 2026-12-02"
    ),
    "time": _words("07:30; 08:00; 09:15; 10:45; 12:00; 13:30; 15:00; 16:20; 18:45; 20:00"),
    "ingredient": _words(
        "chickpeas; salmon; spinach; mushrooms; lentils; tofu; sweet potatoes; eggplant; "
        "chicken thighs; feta; rice noodles; pumpkin"
    ),
    "max_minutes": _same(10, 15, 20, 25, 30, 40, 45, 60),
}

# function -> request templates; {slot} is filled from SLOTS, and every slot used becomes an
# argument of the expected call (an optional argument is in the call only when requested).
TEMPLATES: dict[str, list[str]] = {
    "get_weather": [
        "What's the weather in {city} right now?",
        "Is it raining in {city}?",
        "Tell me the current weather for {city} in {unit}.",
        "How warm is it in {city}? Give it to me in {unit}.",
        "weather {city}",
        "I'm heading to {city} today. What are the conditions there?",
        "Can you check the temperature in {city} in degrees {unit}?",
        "Do I need a jacket in {city} today?",
        "Current conditions in {city}, in {unit} please.",
        "What is it like outside in {city} at the moment?",
    ],
    "set_timer": [
        "Set a timer for {minutes} minutes.",
        "Remind me in {minutes} minutes to {label}.",
        "Start a {minutes} minute timer called {label}.",
        "timer {minutes} min",
        "Can you count down {minutes} minutes for me?",
        "In {minutes} minutes I have to {label}, set a timer.",
        "Put a timer on for {minutes} minutes and label it {label}.",
        "I need an alarm in {minutes} minutes.",
        "Ping me after {minutes} minutes so I can {label}.",
        "Please time {minutes} minutes.",
    ],
    "convert_currency": [
        "How much is {amount} {from_currency} in {to_currency}?",
        "Convert {amount} {from_currency} to {to_currency}.",
        "What do {amount} {from_currency} come to in {to_currency}?",
        "I have {amount} {from_currency}. How many {to_currency} is that?",
        "{amount} {from_currency} to {to_currency}",
        "Exchange {amount} {from_currency} into {to_currency} for me.",
        "What's {amount} {from_currency} worth in {to_currency} today?",
        "If I change {amount} {from_currency}, how many {to_currency} do I get?",
        "Please turn {amount} {from_currency} into {to_currency}.",
        "Could you tell me the value of {amount} {from_currency} in {to_currency}?",
    ],
    "send_email": [
        'Email {to} with the subject "{subject}".',
        "Send a message to {to} titled {subject}.",
        "Write to {to}, subject: {subject}.",
        "Drop {to} an email with the subject line {subject}.",
        "mail {to} re: {subject}",
        "Can you send {to} an email called {subject}?",
        "Please shoot an email over to {to}; the subject is {subject}.",
        "I want to email {to}. Subject: {subject}.",
        "New email to {to} with subject {subject}, please.",
        "Send {to} a note, subject {subject}.",
    ],
    "add_calendar_event": [
        "Add {title} to my calendar on {date} at {time}.",
        "Put {title} in my calendar for {date}.",
        "Schedule {title} on {date} at {time}.",
        "I have {title} on {date}, please add it.",
        "calendar: {title}, {date} {time}",
        "Can you book {title} for {date} starting at {time}?",
        "Create an event called {title} on {date}.",
        "Block {date} at {time} for {title}.",
        "Save {title} on {date} to my calendar.",
        "New calendar entry: {title} on {date} at {time}.",
    ],
    "search_recipes": [
        "Find me a recipe with {ingredient}.",
        "What can I cook with {ingredient} in under {max_minutes} minutes?",
        "Any quick dinner ideas using {ingredient}? I only have {max_minutes} minutes.",
        "recipes {ingredient}",
        "I bought {ingredient}. What could I make with it?",
        "Search for recipes that use {ingredient}.",
        "Show me dishes with {ingredient} that take at most {max_minutes} minutes.",
        "Give me something to cook with {ingredient}.",
        "I have {max_minutes} minutes and some {ingredient}. Recipe ideas?",
        "Look up {ingredient} recipes, nothing longer than {max_minutes} minutes.",
    ],
}

SYSTEM_PROMPT = (
    "Functions you can call (? marks an optional argument):\n<tools>\n{tools}\n</tools>\n"
    'Reply with the call only: <tool_call>[{{"name": NAME, "arguments": {{...}}}}]</tool_call>'
)
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Example:
    """One generated request and the call that answers it."""

    id: str
    split: str
    template: str
    request: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class TaskReport:
    """What ``write_dataset`` wrote. ``manifest`` is the ``ftx_task.json`` content."""

    out_dir: Path
    seconds: float
    records: dict[str, int]
    manifest: dict[str, Any]


def template_splits(seed: int, valid: bool = True) -> dict[str, list[str]]:
    """Template ids (``function/index``) of each split; every function is in every split.

    Without ``valid`` (no validation records asked for) its templates train: test phrasings
    stay unseen either way, and a small model learns more from eight wordings than six."""
    rng = random.Random(f"ftx-toolcall-templates-{seed}")
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name, templates in TEMPLATES.items():
        order = list(range(len(templates)))
        rng.shuffle(order)
        parts = {
            "test": order[:HELD_OUT],
            "valid": order[HELD_OUT : 2 * HELD_OUT] if valid else [],
            "train": order[2 * HELD_OUT if valid else HELD_OUT :],
        }
        for split, idx in parts.items():
            out[split] += [f"{name}/{i}" for i in sorted(idx)]
    return out


def generate(seed: int, counts: dict[str, int]) -> list[Example]:
    """``counts[split]`` examples per split, functions taken in turn, all drawn from ``seed``.

    Examples are distinct within a split (same request text at most once).
    """
    splits = template_splits(seed, valid=counts.get("valid", 0) > 0)
    out: list[Example] = []
    for split in SPLITS:
        rng = random.Random(f"ftx-toolcall-{split}-{seed}")
        n, seen = counts.get(split, 0), set[str]()
        by_function: dict[str, list[str]] = {}
        for t in splits[split]:
            by_function.setdefault(t.split("/")[0], []).append(t)
        functions = list(by_function)
        misses = 0
        while len(seen) < n:
            name = functions[len(seen) % len(functions)]
            template = rng.choice(by_function[name])
            request, arguments = _fill(name, TEMPLATES[name][int(template.split("/")[1])], rng)
            if request in seen:
                # Only a function's held-out phrasings running out of slot combinations
                # makes new draws keep repeating.
                misses += 1
                if misses > 1000:
                    raise ConfigError(f"cannot draw {n} distinct {split} requests; ask for fewer")
                continue
            misses = 0
            seen.add(request)
            out.append(
                Example(f"{split}-{len(seen):05d}", split, template, request, name, arguments)
            )
    return out


def _fill(name: str, template: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    values: dict[str, tuple[str, Any]] = {}
    for slot in _SLOT.findall(template):
        choices = SLOTS[slot]
        if slot == "to_currency":  # never "dollars to dollars"
            choices = [c for c in choices if c[1] != values["from_currency"][1]]
        values[slot] = rng.choice(choices)
    request = _SLOT.sub(lambda m: values[m.group(1)][0], template)
    order = list(_function_by_name(name)["parameters"]["properties"])
    return request, {k: values[k][1] for k in order if k in values}


def _function_by_name(name: str) -> dict[str, Any]:
    return next(f for f in FUNCTIONS if f["name"] == name)


def tools() -> list[dict[str, Any]]:
    """The functions as OpenAI ``tools`` entries."""
    return [{"type": "function", "function": f} for f in FUNCTIONS]


def prompt_messages(example: Example, style: Style) -> list[dict[str, Any]]:
    """The conversation up to the answer (what a model is asked at evaluation)."""
    user = {"role": "user", "content": example.request}
    if style == "tools":
        return [user]
    return [{"role": "system", "content": system_prompt()}, user]


def system_prompt() -> str:
    """The inline style's system message: each function as a one-line signature.

    Signatures rather than the JSON schemas with their descriptions: the prompt is part of
    every training and evaluation sequence, and at ~155 SmolLM2 tokens instead of ~600 it
    leaves most of a short run's compute to the requests and answers.
    """
    return SYSTEM_PROMPT.format(tools="\n".join(signature(f) for f in FUNCTIONS))


def signature(function: dict[str, Any]) -> str:
    """``name(arg: type, opt?: "a"|"b")`` from a JSON-schema function."""
    params = function["parameters"]
    args = []
    for name, schema in params["properties"].items():
        kind = (
            "|".join(json.dumps(v) for v in schema["enum"]) if "enum" in schema else schema["type"]
        )
        optional = "" if name in params.get("required", []) else "?"
        args.append(f"{name}{optional}: {kind}")
    return f"{function['name']}({', '.join(args)})"


def call_text(name: str, arguments: dict[str, Any]) -> str:
    """The inline style's answer: one call in a JSON list between the two tags."""
    call = json.dumps([{"name": name, "arguments": arguments}], ensure_ascii=False)
    return f"<tool_call>{call}</tool_call>"


def record(example: Example, style: Style) -> dict[str, Any]:
    """A training record (``{"messages": [...]}`` plus ``tools`` in the tools style)."""
    messages = prompt_messages(example, style)
    if style == "inline":
        answer = {"role": "assistant", "content": call_text(example.name, example.arguments)}
        return {"messages": [*messages, answer]}
    call = {"type": "function", "function": {"name": example.name, "arguments": example.arguments}}
    return {
        "messages": [*messages, {"role": "assistant", "content": "", "tool_calls": [call]}],
        "tools": tools(),
    }


def reference(example: Example, style: Style) -> dict[str, Any]:
    """What evaluation needs for one held-out example: the prompt and the expected call."""
    ref: dict[str, Any] = {
        "id": example.id,
        "split": example.split,
        "template": example.template,
        "messages": prompt_messages(example, style),
        "expected": {"name": example.name, "arguments": example.arguments},
    }
    if style == "tools":
        ref["tools"] = tools()
    return ref


def write_dataset(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    train: int = 480,
    valid: int = 60,
    test: int = 120,
    style: Style = "inline",
    force: bool = False,
) -> TaskReport:
    """Writes ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` (chat records ``ftx prepare``
    reads), ``references.jsonl`` (valid and test prompts with the expected calls) and
    ``ftx_task.json`` into ``out``, atomically. The same seed gives the same bytes."""
    if style not in ("tools", "inline"):
        raise ConfigError(f"style {style!r}: use 'tools' or 'inline'")
    start = time.perf_counter()
    dst = Path(out)
    check_free(dst, force)
    counts = {"train": train, "valid": valid, "test": test}
    examples = generate(seed, counts)
    manifest = {
        "task": "toolcall",
        "version": VERSION,
        "seed": seed,
        "style": style,
        "records": counts,
        "functions": [f["name"] for f in FUNCTIONS],
        "templates": template_splits(seed, valid=valid > 0),
        "files": {s: f"{s}.jsonl" for s in SPLITS} | {"references": "references.jsonl"},
    }
    with staged_folder(dst, force) as tmp:
        for split in SPLITS:
            rows = [record(e, style) for e in examples if e.split == split]
            _write_jsonl(tmp / f"{split}.jsonl", rows)
        refs = [reference(e, style) for e in examples if e.split != "train"]
        _write_jsonl(tmp / "references.jsonl", refs)
        write_json(tmp / MANIFEST, manifest)
    return TaskReport(dst, time.perf_counter() - start, counts, manifest)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def renders_tools(chat_template: str) -> bool:
    """Whether a chat template writes both the ``tools`` list and an assistant's
    ``tool_calls``, rendered by ftx's one template engine (as ``ftx prepare`` renders it)."""
    from ftx import _core
    from ftx.errors import FtxError

    described = "Looks a probe key up."
    probe = _function("ftx_probe_lookup", described, {"ftx_probe_key": _string("Key")}, [])
    call = {"name": "ftx_probe_lookup", "arguments": {"ftx_probe_key": "ftx-probe-value"}}
    messages = [
        {"role": "user", "content": "Look it up."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": call}],
        },
    ]
    record = json.dumps({"messages": messages, "tools": [{"type": "function", "function": probe}]})
    try:
        out = _core.render_chat(chat_template, record)
    except FtxError:  # a template that does not compile supports nothing
        return False
    if "reject" in out:
        return False
    text = out["text"]
    # The description is only in the tools listing; the value only in the call.
    _, _, reply = text.partition("Look it up.")
    return described in text and "ftx-probe-value" in reply

"""What the three parity checks share: the data beside the repo and the model families, records
as a dataset file holds them, the transformers oracle (``strftime_now`` pinned) and ftx's side
(one ``prepare`` run, read back record by record)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import ftx

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TOK = SHARED / "tokenizers"
TRL = SHARED / "chat_templates" / "trl"


@dataclass(frozen=True)
class Family:
    name: str
    # A folder under tokenizers/ with tokenizer.json(.gz) + tokenizer_config.json, or a GGUF
    # source ("gguf-meta:" JSON of tokenizer.* keys, "gguf:" a vocab GGUF) made into one.
    tokenizer: str
    # A template file under tokenizers/; None: the tokenizer's own.
    template: str | None = None


MISTRAL = "mistral/hf_mistral_7b_v0.1"
FAMILIES = [
    Family("llama3", "llama3"),
    Family("llama3.1", "llama3", "llama3/chat_template.llama-3.1-8b-instruct.jinja"),
    Family("llama3.2", "llama3", "llama3/chat_template.llama-3.2-3b-instruct.jinja"),
    Family("qwen3", "qwen3"),
    Family("qwen2.5", "qwen3", "qwen2_5/chat_template.jinja"),
    Family("mistral-v0.1 [INST] v1", MISTRAL, "mistral/chat_template.axolotl_mistral_v1.jinja"),
    Family("mistral-v0.1 [INST] v2v3", MISTRAL, "mistral/chat_template.axolotl_mistral_v2v3.jinja"),
    Family(
        "mistral-v0.1 [INST] chujiezheng",
        MISTRAL,
        "mistral/chat_template.chujiezheng_mistral-instruct.jinja",
    ),
    # Zephyr-7B is a Mistral-7B fine-tune: its tokenizer is Mistral v0.1's.
    Family("zephyr", MISTRAL, "tinyllama_zephyr/chat_template.chujiezheng_zephyr.jinja"),
    Family("smollm2", "gguf-meta:smollm2/gguf_tokenizer_metadata.json.gz"),
    Family(
        "phi3",
        "gguf:llama_cpp_vocab_gguf/ggml-vocab-phi-3.gguf.gz",
        "phi3/chat_template.phi-3-mini-from-gguf.jinja",
    ),
]


# A BFCL split joined with its possible answers (see _answered_bfcl).
ANSWERED = "+answers"


# Every dataset file with chat or text records (BFCL's possible answers and tool docs are not
# records, and dataset_info.json is LLaMA-Factory's config).
DATASETS = sorted(
    str(p.relative_to(SHARED / "datasets"))
    for p in (SHARED / "datasets").rglob("*")
    if p.is_file()
    and p.suffix in (".json", ".jsonl", ".txt")
    and p.name != "dataset_info.json"
    and "possible_answer" not in p.parts
    and "multi_turn_func_doc" not in p.parts
) + sorted(
    # Multi-turn BFCL answers are per-turn lists of Python call strings, not JSON calls.
    f"bfcl/{p.name}{ANSWERED}"
    for p in (SHARED / "datasets" / "bfcl" / "possible_answer").glob("*.json")
    if "multi_turn" not in p.name
)


# ---------------------------------------------------------------------------------------------
# Records as read from a dataset file, in file order.


def _answered_bfcl(path: Path) -> list[Any]:
    """BFCL questions with their first ground-truth answer appended as the assistant's tool
    calls, so that the tool-call rendering of each template meets real BFCL tools and calls
    (the question files alone have nothing to train). An argument whose first accepted value is
    "" is optional and left out, as BFCL's checker allows."""
    answers = {
        a["id"]: a["ground_truth"]
        for a in read_records(path.parent / "possible_answer" / path.name)
    }
    out = []
    for q in read_records(path):
        calls = [
            {
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": {k: v[0] for k, v in args.items() if v and v[0] != ""},
                },
            }
            for call in answers[q["id"]]
            for name, args in call.items()
        ]
        turns = [[*q["question"][0], {"role": "assistant", "content": "", "tool_calls": calls}]]
        out.append({**q, "question": turns})
    return out


def read_records(path: Path) -> list[Any]:
    if path.name.endswith(ANSWERED):
        return _answered_bfcl(path.with_name(path.name.removesuffix(ANSWERED)))
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [{"text": line} for line in text.splitlines() if line.strip()]
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def gather(datasets: Sequence[str], limit: int | None) -> list[tuple[str, int, Any]]:
    """(dataset, record number, record) for the first ``limit`` records of each dataset."""
    return [
        (ds, n, r)
        for ds in datasets
        for n, r in enumerate(read_records(SHARED / "datasets" / ds)[:limit], start=1)
    ]


# ---------------------------------------------------------------------------------------------
# transformers, the oracle.


@cache
def hf_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@contextlib.contextmanager
def pinned_date() -> Iterator[None]:
    """transformers' ``strftime_now`` reads ``datetime.now()``; ftx renders 26 Jul 2024."""
    from transformers.utils import chat_template_utils as ctu

    class Pinned(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Pinned:
            return cls(2024, 7, 26, tzinfo=tz)

    saved = ctu.datetime
    ctu.datetime = Pinned  # type: ignore[misc]
    try:
        yield
    finally:
        ctu.datetime = saved  # type: ignore[misc]


def with_fallback(render: Callable[[list[Any]], T], messages: list[Any]) -> T:
    """``render(messages)`` for the first form of the record that renders, as ftx gives them to a
    template (``template.rs::render_either``): as ``apply_chat_template`` does, with the keys whose
    value is ``None`` dropped (a call-only message then has no content), and else with ``""`` for
    that content, for templates that fail on a message without one."""
    present = [{k: v for k, v in m.items() if v is not None} for m in messages]
    try:
        return render(present)
    except Exception:
        if all(m.get("content") is not None for m in messages):
            raise
    return render([{**m, "content": ""} if m.get("content") is None else m for m in messages])


def oracle_ids(tok: Any, norm: dict[str, Any], template: str | None) -> list[int] | str:
    """transformers' ids for a normalized record, or the reason it refuses it."""
    if "text" in norm:
        return list(tok(norm["text"])["input_ids"])
    try:
        with pinned_date(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = with_fallback(
                lambda messages: tok.apply_chat_template(
                    messages,
                    tools=norm["tools"] or None,
                    chat_template=template,
                    tokenize=True,
                    return_dict=True,
                ),
                norm["messages"],
            )
    except Exception as e:  # the oracle's own refusal (TemplateError, TypeError, ...)
        return f"{type(e).__name__}: {e}"
    return list(out["input_ids"])


SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}


def oracle_render(source: str, conv: dict[str, Any], gen: bool) -> str | None:
    """transformers' render (None when it raises)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        with pinned_date(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            texts, _ = with_fallback(
                lambda messages: render_jinja_template(
                    conversations=[messages],
                    tools=conv.get("tools"),
                    chat_template=source,
                    add_generation_prompt=gen,
                    **SPECIALS,
                ),
                conv["messages"],
            )
    except Exception:
        return None
    return str(texts[0])


# ---------------------------------------------------------------------------------------------
# ftx's side: what prepare wrote, record by record.


def prepared(
    records: Sequence[Any], mdir: Path, template: str | None, train_on: str, root: Path
) -> list[tuple[str | None, Any]]:
    """Runs ``ftx.prepare`` once over ``records`` (dedup off, no split) and returns, per record,
    ``(reject code, None)`` or ``(None, (ids, mask))``, matched by line number."""
    work = Path(tempfile.mkdtemp(dir=root))
    try:
        data = work / "in.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        with contextlib.suppress(ftx.DataError):  # no usable record: all are in the rejects
            ftx.prepare(
                data,
                out=work / "o",
                model=mdir,
                chat_template=template,
                dedup=False,
                train_on=train_on,  # type: ignore[arg-type]
            )
        codes: dict[int, str] = {}
        for rejects in (work / "o" / "rejects.jsonl", work / "o.rejects.jsonl"):
            if rejects.exists():
                for line in rejects.read_text().splitlines():
                    r = json.loads(line)
                    codes[int(r["line"])] = r["code"]
        rows = iter(ftx.load_dataset(work / "o")) if (work / "o").is_dir() else iter(())
        out: list[tuple[str | None, Any]] = []
        for i in range(1, len(records) + 1):
            if i in codes:
                out.append((codes[i], None))
            else:
                ids, mask = next(rows)
                out.append((None, (ids.tolist(), mask.tolist())))
        assert next(rows, None) is None, "ftx wrote more records than it read"
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Parity of ftx with transformers (the oracle) on the real data beside the repo.

Three checks, shared by the tests (tests/parity/) and the report (``python tools/parity.py``):

1. ids: for each model family, every record of every dataset goes through ``ftx.prepare`` (dedup
   off, no split) and ``ftx.load_dataset``; the ids must equal
   ``AutoTokenizer.apply_chat_template(messages, tools=..., tokenize=True)`` on the messages ftx
   normalized the record to (``ftx._core.normalize``: what the template sees).
2. masks: for each TRL template with a ``*_training.jinja`` twin, ftx's mask from the plain
   template must equal transformers' ``assistant_masks`` from the twin, up to the documented rules
   in :func:`explain_mask_difference`.
3. renders: every template under ``chat_templates/`` renders each synthetic conversation of
   ``ftx.preparation.template_check`` exactly as transformers' jinja2 does, or both refuse it.

transformers' ``strftime_now`` is pinned to 26 Jul 2024, the date ftx renders (docs/masking.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import json
import re
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

import ftx
from ftx import _core
from ftx.preparation.template_check import CONVERSATIONS

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TOK = SHARED / "tokenizers"


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


def _family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


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
# Models: a folder both ftx and transformers load.


def _gguf_metadata(path: Path) -> dict[str, Any]:
    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        raw = Path(d) / path.name.removesuffix(".gz")
        with gzip.open(path) as src, raw.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        reader = gguf.GGUFReader(raw)
        meta: dict[str, Any] = {}
        for name, f in reader.fields.items():
            if not name.startswith(("tokenizer.", "general.")):
                continue
            if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
                values = [f.parts[i] for i in f.data]
                if f.types[-1] == gguf.GGUFValueType.STRING:
                    meta[name] = [bytes(v).decode("utf-8") for v in values]
                else:
                    meta[name] = [v.tolist()[0] for v in values]
            elif f.types and f.types[0] == gguf.GGUFValueType.STRING:
                meta[name] = bytes(f.parts[f.data[0]]).decode("utf-8")
            else:
                meta[name] = np.asarray(f.parts[f.data[0]]).tolist()[0]
    return meta


def model_dir(family: Family, root: Path) -> Path:
    """A model folder for ``family`` under ``root`` (made once), with a plain tokenizer.json."""
    key = family.tokenizer.replace("/", "_").replace(":", "_")
    out = root / key
    if out.is_dir():
        return out
    tmp = root / f".{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if family.tokenizer.startswith("standin:"):
        _standin(family.tokenizer.removeprefix("standin:"), tmp)
    elif family.tokenizer.startswith("gguf"):
        # The converter lives on the `convert` branch; until it is merged these families skip.
        from ftx.gguf import tokenizer as gguf_tokenizer

        kind, rel = family.tokenizer.split(":", 1)
        if kind == "gguf-meta":
            with gzip.open(TOK / rel, "rt", encoding="utf-8") as f:
                meta = json.load(f)
        else:
            meta = _gguf_metadata(TOK / rel)
        config = gguf_tokenizer.tokenizer_config(meta)
        (tmp / "tokenizer.json").write_text(json.dumps(gguf_tokenizer.tokenizer_json(meta)))
        if family.template is None and family.name == "smollm2":
            config["chat_template"] = (TOK / "smollm2" / "chat_template.jinja").read_text()
        (tmp / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        src = TOK / family.tokenizer
        if (src / "tokenizer.json").exists():
            shutil.copy(src / "tokenizer.json", tmp / "tokenizer.json")
        else:
            with (
                gzip.open(src / "tokenizer.json.gz") as g,
                (tmp / "tokenizer.json").open("wb") as o,
            ):
                shutil.copyfileobj(g, o)
        config = json.loads((src / "tokenizer_config.json").read_text())
        if config.get("tokenizer_class") == "LlamaTokenizer" and config.get("legacy"):
            # transformers 5 rebuilds a LlamaTokenizer from vocab and merges with its own
            # Metaspace pre-tokenizer and ignores `legacy: true`, so "<s> [INST]" loses the "▁"
            # the published tokenizer.json (and SentencePiece's legacy mode) put before " [".
            # The oracle must tokenize with the tokenizer as published, as ftx does.
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        (tmp / "tokenizer_config.json").write_text(json.dumps(config))
    tmp.rename(out)
    return out


# The EOS of the real tokenizers of the stand-in families (their tokenizer_config.json).
STANDIN_EOS = {
    "cohere": "<|END_OF_TURN_TOKEN|>",
    "cohere2": "<|END_OF_TURN_TOKEN|>",
    "deepseekv3": "<\uff5cend\u2581of\u2581sentence\uff5c>",
    "glm4moe": "<|endoftext|>",
    "gptoss": "<|return|>",
    "lfm2": "<|im_end|>",
    "nemotron_3_nano": "<|im_end|>",
    "nemotron_3_super": "<|im_end|>",
    "nemotron_3_ultra": "<|im_end|>",
    "qwen2_5_vl": "<|im_end|>",
    "qwen3_vl": "<|im_end|>",
}


def _standin(trl_name: str, out: Path) -> None:
    """Qwen3's BPE with the turn markers of a TRL template added as special tokens, for the
    families whose tokenizer is not here (Gemma, Cohere, DeepSeek, GLM, gpt-oss, LFM2, ...):
    masks depend on where the template's text and special tokens are, not on the vocabulary."""
    source = (TRL / f"{trl_name}.jinja").read_text() + (
        TRL / f"{trl_name}_training.jinja"
    ).read_text()
    bar = "\uff5c"  # DeepSeek's fullwidth bar
    pattern = rf"<\|[^<>|\s]+\|>|<[a-z_]+_of_turn>|<{bar}[^<>]+?{bar}>|<\|[a-z_]+>|<[a-z_]+\|>"
    markers = sorted(set(re.findall(pattern, source)))
    with gzip.open(TOK / "qwen3" / "tokenizer.json.gz", "rt", encoding="utf-8") as f:
        tj = json.load(f)
    known = {t["content"]: t for t in tj["added_tokens"]}
    next_id = max(t["id"] for t in tj["added_tokens"]) + 1
    eos = STANDIN_EOS.get(trl_name, "<eos>")
    for m in [*markers, "<bos>", eos]:
        if m in known:
            known[m]["special"] = True
            continue
        tj["added_tokens"].append(
            {
                "id": next_id,
                "content": m,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
        next_id += 1
    (out / "tokenizer.json").write_text(json.dumps(tj))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": eos,
        "add_bos_token": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))


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


@dataclass
class Outcome:
    """One family and dataset."""

    family: str
    dataset: str
    records: int = 0
    compared: int = 0
    agree: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # Records ftx rejected that transformers renders and tokenizes: each needs a reason.
    rejected_but_rendered: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


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


def _oracle_ids(tok: Any, norm: dict[str, Any], template: str | None) -> list[int] | str:
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


def _gather(datasets: Sequence[str], limit: int | None) -> list[tuple[str, int, Any]]:
    """(dataset, record number, record) for the first ``limit`` records of each dataset."""
    return [
        (ds, n, r)
        for ds in datasets
        for n, r in enumerate(read_records(SHARED / "datasets" / ds)[:limit], start=1)
    ]


def compare_ids(
    family: Family, datasets: Sequence[str], root: Path, limit: int | None = None
) -> list[Outcome]:
    """ftx prepare vs apply_chat_template on the first ``limit`` records (all when None) of
    each dataset, in one ``prepare`` run.

    ``train_on="all"`` so that records without an assistant turn (BFCL questions) are compared
    too: the ids do not depend on the mask.
    """
    items = _gather(datasets, limit)
    mdir = model_dir(family, root)
    template = str(TOK / family.template) if family.template else None
    results = prepared([r for _, _, r in items], mdir, template, "all", root)
    tok = hf_tokenizer(mdir)
    source = (TOK / family.template).read_text() if family.template else None
    outcomes = {ds: Outcome(family.name, ds) for ds in datasets}
    for (ds, n, record), (code, row) in zip(items, results, strict=True):
        o = outcomes[ds]
        o.records += 1
        norm = _core.normalize(json.dumps(record))
        if code is not None:
            o.rejected[code] += 1
            if "reject" not in norm and not isinstance(_oracle_ids(tok, norm, source), str):
                o.rejected_but_rendered.append(f"record {n}: {code}")
            continue
        ids = row[0]
        o.compared += 1
        oracle = _oracle_ids(tok, norm, source)
        if oracle == ids:
            o.agree += 1
        elif len(o.mismatches) < 5:
            o.mismatches.append(f"record {n}: {_first_difference(ids, oracle)}")
    return list(outcomes.values())


def _first_difference(ftx_ids: list[int], oracle: list[int] | str) -> str:
    if isinstance(oracle, str):
        return f"transformers refuses it ({oracle[:120]}) but ftx accepted it"
    k = next(
        (i for i, (a, b) in enumerate(zip(ftx_ids, oracle, strict=False)) if a != b),
        min(len(ftx_ids), len(oracle)),
    )
    return f"first difference at token {k}: ftx {ftx_ids[k : k + 5]} vs {oracle[k : k + 5]}"


# ---------------------------------------------------------------------------------------------
# Masks against TRL's {% generation %} twins.

TRL = SHARED / "chat_templates" / "trl"


def training_pairs() -> list[str]:
    """Names of TRL templates that have a ``*_training.jinja`` twin."""
    return sorted(
        p.name.removesuffix("_training.jinja")
        for p in TRL.glob("*_training.jinja")
        if (TRL / p.name.replace("_training.jinja", ".jinja")).exists()
    )


# The tokenizer each TRL template is checked with; templates of families without a tokenizer
# here are listed in the report with that reason.
MASK_TOKENIZERS = {
    "qwen2_5": _family("qwen3"),
    "qwen3": _family("qwen3"),
    "qwen3_instruct_2507": _family("qwen3"),
    "qwen3_5_nothink": _family("qwen3"),
    "qwen3_5_think": _family("qwen3"),
    "qwen3_6": _family("qwen3"),
    "llama3": _family("llama3"),
    "phi3": _family("phi3"),
    "phi3_5": _family("phi3"),
}
# TRL templates of vision models index `content[0]['type']`: they need content as a list of
# typed parts, and with text content transformers renders every turn empty (idefics3) or fails
# (llava_next), while ftx passes text and rejects what it cannot mask.
MASK_UNSUPPORTED = {
    "idefics3": "vision template: content must be a list of typed parts",
    "llava_next": "vision template: content must be a list of typed parts",
}

MASK_TOKENIZERS.update(
    {
        name: Family(f"qwen3 BPE + {name} markers", f"standin:{name}")
        for name in [
            "cohere",
            "cohere2",
            "deepseekv3",
            "diffusion_gemma",
            "gemma",
            "gemma3",
            "glm4moe",
            "gptoss",
            "lfm2",
            "nemotron_3_nano",
            "nemotron_3_super",
            "nemotron_3_ultra",
            "qwen2_5_vl",
            "qwen3_vl",
        ]
    }
)


def generation_prompt(source: str) -> str:
    """What ``add_generation_prompt`` adds after a user turn, as transformers renders it."""
    conv = {"messages": [{"role": "user", "content": "hi"}]}
    with_prompt = oracle_render(source, conv, True) or ""
    without = oracle_render(source, conv, False) or ""
    k = next(
        (i for i, (a, b) in enumerate(zip(with_prompt, without, strict=False)) if a != b),
        min(len(with_prompt), len(without)),
    )
    return with_prompt[k:]


def _in_prompt(text: str, tokens: Sequence[str], j: int, gen_prompt: str) -> bool:
    if j >= len(tokens):
        return False
    nxt = tokens[j]
    return any(text + nxt[:m] in gen_prompt for m in range(len(nxt) + 1))


def explain_mask_difference(
    tokens: Sequence[str],
    ftx_mask: Sequence[int],
    trl_mask: Sequence[int],
    specials: set[str],
    gen_prompt: str,
) -> str | None:
    """Why the two masks differ, run by run of differing tokens, or None when some run is not
    covered by a documented rule (docs/masking.md, sections 3 and 4). Most are tokens TRL trains
    and ftx does not:

    - whitespace right after a trained end-of-turn token (``<|im_end|>`` + ``\\n``): template
      text between turns, which the model never writes;
    - special tokens the template writes after the end token of the last turn (Phi-3's
      ``eos_token`` after ``<|end|>``): ftx's turn ends at its first special token, on which
      generation stops;
    - one the other way: after a tool call whose closing ftx cannot learn from the template
      (Gemma 4 style, where the model turn goes on with the tool's result), ftx trains up to the
      first special token (``Tail::ToolCall``), ``<|tool_response>``, which TRL leaves out;
    - a hole in transformers' mask: a byte-level token made only of the last bytes of a
      character (an emoji split in two tokens) holds no character start, so ``char_to_token``
      never marks it although both of its neighbours are trained; ftx marks by byte ranges;
    - text of the generation prompt at the start of a turn (Qwen2.5's ``\\n`` after
      ``assistant``, Qwen3.5's ``<think>``), followed by trained tokens: ftx's assistant header is
      the part of the generation prompt every assistant turn writes, which at inference the
      prompt writes, not the model. The run may end inside the next token (``\\n`` of
      ``\\n\\n``): ftx trains a token that straddles the end of the header.
    """
    reasons = set()
    i = 0
    n = len(tokens)
    while i < n:
        if ftx_mask[i] == trl_mask[i]:
            i += 1
            continue
        j = i
        while j < n and ftx_mask[j] != trl_mask[j]:
            j += 1
        text = "".join(tokens[i:j])
        if (
            j == i + 1
            and ftx_mask[i]
            and tokens[i] in specials
            and trl_mask[i - 1]
            and "tool_call" in tokens[i - 1]
        ):
            reasons.add(f"ftx trains {text!r}, the special token that ends the tool call")
            i = j
            continue
        if (
            all(ftx_mask[k] and not trl_mask[k] for k in range(i, j))
            and set(text) == {"\ufffd"}
            and trl_mask[i - 1]
            and j < n
            and trl_mask[j]
        ):
            reasons.add("transformers leaves a hole at a token holding only a character's tail")
            i = j
            continue
        if any(ftx_mask[k] or not trl_mask[k] for k in range(i, j)):
            return None  # ftx trains something TRL does not
        after_end = i > 0 and tokens[i - 1] in specials and ftx_mask[i - 1]
        if not text.strip() and after_end:
            reasons.add("TRL trains the whitespace after the end-of-turn token")
        elif j == n and after_end and all(t in specials for t in tokens[i:j]):
            reasons.add(f"TRL trains {text!r} the template writes after the last turn's end")
        elif _in_prompt(text, tokens, j, gen_prompt) and ftx_mask[j] and trl_mask[j]:
            reasons.add(f"TRL trains {text!r} of the generation prompt")
        else:
            return None
        i = j
    return "; ".join(sorted(reasons))


@dataclass
class MaskOutcome:
    template: str
    dataset: str
    compared: int = 0
    equal: int = 0
    via_twin: int = 0
    explained: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    unexplained: list[str] = field(default_factory=list)


def _drops_tool_calls(source: str, norm: dict[str, Any]) -> bool:
    """The template never writes ``tool_calls`` and the record has a turn made only of calls."""
    return "tool_calls" not in source and any(
        m["role"] == "assistant" and m.get("tool_calls") and not (m.get("content") or "").strip()
        for m in norm.get("messages", [])
    )


def _oracle_refuses(tok: Any, norm: dict[str, Any], source: str) -> bool:
    return isinstance(_oracle_ids(tok, norm, source), str)


def compare_masks(
    name: str, datasets: Sequence[str], root: Path, limit: int | None = None
) -> list[MaskOutcome]:
    """ftx's masks from the plain TRL template vs transformers' ``assistant_masks`` from its
    training twin. Where the twin renders other text than the plain template (Qwen3's twin keeps
    the think block of every turn, to be prefix-preserving), tokens cannot be compared one to one;
    then ftx's mask is computed from the twin itself (ftx reads ``{% generation %}`` as plain
    output) and compared, and the record counts in ``via_twin``."""
    family = MASK_TOKENIZERS[name]
    items = _gather(datasets, limit)
    records = [r for _, _, r in items]
    mdir = model_dir(family, root)
    plain_src = (TRL / f"{name}.jinja").read_text()
    results = prepared(records, mdir, str(TRL / f"{name}.jinja"), "assistant", root)
    twin_results: list[tuple[str | None, Any]] | None = None
    tok = hf_tokenizer(mdir)
    training = (TRL / f"{name}_training.jinja").read_text()
    specials = set(tok.all_special_tokens) | {
        t.content for t in tok.added_tokens_decoder.values() if t.special
    }
    gen_prompt = generation_prompt(training)
    outcomes = {ds: MaskOutcome(name, ds) for ds in datasets}
    for k, ((ds, n, record), (code, row)) in enumerate(zip(items, results, strict=True)):
        o = outcomes[ds]
        norm = _core.normalize(json.dumps(record))
        if code is not None:
            o.rejected[code] += 1
            if code == "mask_not_found" and _drops_tool_calls(plain_src, norm):
                o.explained["the template drops tool calls: ftx rejects the empty turn"] += 1
            elif code in ("bad_role_order", "template_error") and _oracle_refuses(
                tok, norm, plain_src
            ):
                o.explained["the template refuses the record, in transformers too"] += 1
            elif "reject" not in norm:
                o.unexplained.append(f"record {n}: rejected ({code})")
            continue
        ids, mask = row
        o.compared += 1
        with pinned_date(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            render = partial(
                tok.apply_chat_template,
                tools=norm["tools"] or None,
                chat_template=training,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            ref = with_fallback(render, norm["messages"])
        if list(ref["input_ids"]) != ids:
            if twin_results is None:
                twin_results = prepared(
                    records, mdir, str(TRL / f"{name}_training.jinja"), "assistant", root
                )
            twin_code, twin_row = twin_results[k]
            if twin_code is not None or list(ref["input_ids"]) != twin_row[0]:
                o.unexplained.append(f"record {n}: the twin's ids differ ({twin_code})")
                continue
            o.via_twin += 1
            ids, mask = twin_row
        trl = list(ref["assistant_masks"])
        if trl == mask:
            o.equal += 1
            continue
        tokens = [tok.decode([t]) for t in ids]
        why = explain_mask_difference(tokens, mask, trl, specials, gen_prompt)
        if why is None:
            j = next(j for j, (a, b) in enumerate(zip(mask, trl, strict=True)) if a != b)
            o.unexplained.append(
                f"record {n}: token {j} {tokens[j]!r}: ftx {mask[j]}, TRL {trl[j]}"
            )
        else:
            o.explained[why] += 1
    return list(outcomes.values())


# ---------------------------------------------------------------------------------------------
# Renders of every template on the synthetic conversations.

TEMPLATE_DIRS = ["llama_cpp", "axolotl", "chujiezheng_chat_templates", "trl"]
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}


def all_templates() -> list[Path]:
    return sorted(p for d in TEMPLATE_DIRS for p in (SHARED / "chat_templates" / d).glob("*.jinja"))


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


@dataclass
class RenderOutcome:
    template: str
    cases: int = 0
    agree: int = 0
    # (conversation, generation prompt, what differs)
    differences: list[str] = field(default_factory=list)


def compare_renders(path: Path) -> RenderOutcome:
    source = path.read_text()
    out = RenderOutcome(str(path.relative_to(SHARED / "chat_templates")))
    for name, conv in CONVERSATIONS.items():
        norm = _core.normalize(json.dumps(conv))
        for gen in (False, True):
            out.cases += 1
            try:
                got = _core.render_chat(
                    source, json.dumps(conv), add_generation_prompt=gen, **SPECIALS
                )
            except ftx.TemplateError as e:
                got = {"reject": {"code": "compile", "message": str(e)}}
            ref = oracle_render(source, {**conv, "messages": norm["messages"]}, gen)
            ftx_text = got.get("text")
            if ftx_text == ref:
                out.agree += 1
            else:
                what = (
                    "transformers raises, ftx renders"
                    if ref is None
                    else f"ftx refuses: {got['reject']['message'][:100]}"
                    if ftx_text is None
                    else "texts differ"
                )
                out.differences.append(f"{name}, generation prompt {gen}: {what}")
    return out


# Templates whose render cannot match transformers', with the reason (checked by the tests: a
# template listed here must still differ, any other must agree).
RENDER_EXCEPTIONS: dict[str, str] = {
    "llama_cpp/CohereForAI-c4ai-command-r-plus-tool_use.jinja": (
        "without tools, transformers raises TypeError ('NoneType' object is not iterable: "
        "`for tool in tools`); minijinja iterates none as empty and renders"
    ),
    "llama_cpp/NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": (
        "without tools, transformers raises TypeError (`for tool in tools` over None); ftx renders"
    ),
    "llama_cpp/llama-cpp-deepseek-r1.jinja": (
        "with tools, jinja2 cannot `tojson` the generator `map(...)` returns; minijinja's map "
        "gives a list, which ftx writes as JSON"
    ),
    "llama_cpp/meetkai-functionary-medium-v3.1.jinja": (
        "with tools, `'...'|safe + tojson(...)` is Markup concatenation in jinja2, which "
        "HTML-escapes the JSON (&#34;); ftx writes plain JSON, as the model was trained on"
    ),
}


# ---------------------------------------------------------------------------------------------
# The report.


def _rate(agree: int, compared: int) -> str:
    return f"{100 * agree / compared:.1f}%" if compared else "n/a"


def _codes(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def report(limit: int | None) -> str:
    """The markdown report: per family and dataset, per TRL twin, per template."""
    root = Path(tempfile.mkdtemp(prefix="ftx-parity-"))
    scope = "all records" if limit is None else f"the first {limit} records"
    summary = ["| family | records | compared | agree | rate |", "|---|---:|---:|---:|---:|"]
    detail = [
        "| family | dataset | records | compared | agree | rejected by ftx (code count) |",
        "|---|---|---:|---:|---:|---|",
    ]
    problems: list[str] = []
    try:
        for fam in FAMILIES:
            try:
                model_dir(fam, root)
            except ImportError as e:
                summary.append(f"| {fam.name} | | | | skipped: {e} |")
                continue
            outcomes = compare_ids(fam, DATASETS, root, limit)
            n = [sum(getattr(o, k) for o in outcomes) for k in ("records", "compared", "agree")]
            summary.append(f"| {fam.name} | {n[0]} | {n[1]} | {n[2]} | {_rate(n[2], n[1])} |")
            for o in outcomes:
                detail.append(
                    f"| {o.family} | {o.dataset} | {o.records} | {o.compared} | {o.agree} "
                    f"| {_codes(o.rejected)} |"
                )
                problems += [f"{o.family} / {o.dataset}: {m}" for m in o.mismatches]
                problems += [
                    f"{o.family} / {o.dataset}: rejected but rendered: {m}"
                    for m in o.rejected_but_rendered
                ]
        masks = [
            "| template | tokenizer | compared | via the twin | equal | explained differences "
            "| rejected (explained) | unexplained |",
            "|---|---|---:|---:|---:|---|---|---:|",
        ]
        for name in training_pairs():
            if name in MASK_UNSUPPORTED:
                masks.append(f"| {name} | | | | | {MASK_UNSUPPORTED[name]} | | |")
                continue
            fam = MASK_TOKENIZERS[name]
            try:
                outs = compare_masks(name, MASK_DATASETS, root, limit)
            except ImportError as e:
                masks.append(f"| {name} | {fam.name} | | | | skipped: {e} | | |")
                continue
            explained: Counter[str] = Counter()
            rejected: Counter[str] = Counter()
            for m in outs:
                explained.update(m.explained)
                rejected.update(m.rejected)
                problems += [f"mask {name} / {m.dataset}: {u}" for u in m.unexplained]
            why = "; ".join(f"{k} ({v})" for k, v in sorted(explained.items()))
            t = [sum(getattr(m, k) for m in outs) for k in ("compared", "via_twin", "equal")]
            bad = sum(len(m.unexplained) for m in outs)
            masks.append(
                f"| {name} | {fam.name} | {t[0]} | {t[1]} | {t[2]} | {why} | {_codes(rejected)} "
                f"| {bad} |"
            )
        renders = ["| template | cases | agree | reason for differences |", "|---|---:|---:|---|"]
        total = [0, 0]
        for path in all_templates():
            r = compare_renders(path)
            total[0] += r.cases
            total[1] += r.agree
            if r.differences:
                reason = RENDER_EXCEPTIONS.get(r.template, "UNEXPLAINED: " + r.differences[0])
                renders.append(f"| {r.template} | {r.cases} | {r.agree} | {reason} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines = [
        "# Parity with transformers",
        "",
        f"Generated by `python tools/parity.py` on {scope} of each dataset "
        "(tests/parity runs the same checks on fewer records). ftx's ids and masks are read "
        "back from the artifact `ftx prepare` writes (dedup off, no split), record by record; "
        "transformers gets the messages ftx normalized each record to (`ftx._core.normalize`: "
        "what the template sees), with `strftime_now` pinned to ftx's fixed date (26 Jul 2024). "
        "For the ids, records are prepared with `--train-on all`, so that records without an "
        "answer are compared too; a record ftx rejects is counted by reject code and must be "
        "one transformers refuses as well (no answer, or the template's `raise_exception`). "
        "BFCL `+answers` rows are BFCL questions joined with their first possible answer as the "
        "assistant's tool calls. Mistral v0.1's tokenizer is loaded by the oracle as published "
        "(transformers 5 would rebuild it as a non-legacy `LlamaTokenizer`, which drops the `▁` "
        "that `legacy: true` puts after `<s>` in `<s> [INST]`).",
        "",
        "## Token ids: `ftx prepare` vs `AutoTokenizer.apply_chat_template(tokenize=True)`",
        "",
        *summary,
        "",
        "Per dataset:",
        "",
        *detail,
        "",
        "## Masks: ftx (plain TRL template) vs transformers' `assistant_masks` (training twin)",
        "",
        *masks,
        "",
        "## Renders: ftx vs jinja2 through transformers (synthetic conversations)",
        "",
        f"{total[1]} of {total[0]} renders agree ({len(all_templates())} templates, "
        f"{len(CONVERSATIONS)} conversations, with and without the generation prompt). "
        "Templates with differences:",
        "",
        *renders,
        "",
        "## Unexplained differences",
        "",
        *([f"- {p}" for p in problems] or ["None."]),
    ]
    return "\n".join(lines) + "\n"


MASK_DATASETS = [
    "llama_factory/glaive_toolcall_en_demo.json",
    "llama_factory/kto_en_demo.json",
    "fastchat/dummy_conversation.json",
    "llama_factory/reason_tool_use_demo_50.jsonl",
    "llama_factory/alpaca_en_demo.json",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, help="Records per dataset (default: all).")
    ap.add_argument("--out", type=Path, help="Write the markdown here (default: stdout).")
    args = ap.parse_args()
    text = report(args.limit)
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()

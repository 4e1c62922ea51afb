"""Check 2, masks: ftx's masks from the plain TRL templates against transformers'
``assistant_masks`` from their ``{% generation %}`` training twins, up to documented rules."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ftx import _core

from .common import (
    FAMILIES,
    TRL,
    Family,
    gather,
    hf_tokenizer,
    oracle_ids,
    oracle_render,
    pinned_date,
    prepared,
    with_fallback,
)
from .models import model_dir


def _family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


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


MASK_DATASETS = [
    "llama_factory/glaive_toolcall_en_demo.json",
    "llama_factory/kto_en_demo.json",
    "fastchat/dummy_conversation.json",
    "llama_factory/reason_tool_use_demo_50.jsonl",
    "llama_factory/alpaca_en_demo.json",
]


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
    return isinstance(oracle_ids(tok, norm, source), str)


def compare_masks(
    name: str, datasets: Sequence[str], root: Path, limit: int | None = None
) -> list[MaskOutcome]:
    """ftx's masks from the plain TRL template vs transformers' ``assistant_masks`` from its
    training twin. Where the twin renders other text than the plain template (Qwen3's twin keeps
    the think block of every turn, to be prefix-preserving), tokens cannot be compared one to one;
    then ftx's mask is computed from the twin itself (ftx reads ``{% generation %}`` as plain
    output) and compared, and the record counts in ``via_twin``."""
    family = MASK_TOKENIZERS[name]
    items = gather(datasets, limit)
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

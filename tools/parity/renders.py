"""Check 3, renders: every shared chat template renders template_check's synthetic
conversations with ftx exactly as with jinja2 through transformers, or both refuse."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import ftx
from ftx import _core
from ftx.preparation.template_check import CONVERSATIONS

from .common import SHARED, SPECIALS, oracle_render

TEMPLATE_DIRS = ["llama_cpp", "axolotl", "chujiezheng_chat_templates", "trl"]


def all_templates() -> list[Path]:
    return sorted(p for d in TEMPLATE_DIRS for p in (SHARED / "chat_templates" / d).glob("*.jinja"))


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

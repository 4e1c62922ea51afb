"""One renderer: the prompt `ftx evaluate` generates from is the training render of the same
conversation up to the reply, token for token, because both come from ftx's one template
engine and tokenizer (no transformers or jinja2 in between)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftx import _core
from ftx.tasks.toolcall import renders_tools

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def _train_and_prompt(model: Path) -> tuple[list[int], list[int], list[int]]:
    trained = _core.preview([json.dumps({"messages": CONVERSATION})], model_dir=model)
    item = trained["items"][0]
    prompt = _core.prompts([json.dumps({"messages": CONVERSATION[:-1]})], model_dir=model)
    return item["ids"], item["mask"], prompt["items"][0]["ids"]


def test_the_evaluation_prompt_is_the_training_render_up_to_the_reply(tiny_model: Path) -> None:
    ids, mask, prompt = _train_and_prompt(tiny_model)
    assert ids[: len(prompt)] == prompt
    # nothing of the prompt is trained, and the reply starts right after it
    assert not any(mask[: len(prompt)]) and mask[len(prompt)] == 1


@pytest.mark.parametrize("name", ["llama3", "qwen3"])
def test_the_same_holds_for_real_tokenizers_and_templates(shared: Path, name: str) -> None:
    ids, mask, prompt = _train_and_prompt(shared / "tokenizers" / name)
    assert ids[: len(prompt)] == prompt
    assert not any(mask[: len(prompt)]) and any(mask[len(prompt) :])


def test_a_template_that_cannot_render_the_prompt_says_why(
    tmp_path: Path, tiny_model: Path
) -> None:
    template = tmp_path / "refuses.jinja"
    template.write_text("{{ raise_exception('no system role') }}")
    out = _core.prompts(
        [json.dumps({"messages": CONVERSATION[:-1]})],
        model_dir=tiny_model,
        chat_template=str(template),
    )
    assert out["items"][0]["reject"]["message"] == "no system role"


def test_the_tool_probe_renders_through_the_same_engine(shared: Path) -> None:
    qwen = (shared / "tokenizers" / "qwen2_5" / "chat_template.jinja").read_text()
    assert renders_tools(qwen)
    assert not renders_tools("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert not renders_tools("{% for m in messages %")  # does not compile

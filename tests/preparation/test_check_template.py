"""``ftx prepare --check-template``: the template's self-test on synthetic conversations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ftx.preparation.template_check import CONVERSATIONS, check_template


def ftx_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftx.cli", *args], capture_output=True, text=True)


def check_with_qwen3(shared: Path, tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """``--check-template`` of the Qwen3 tokenizer with the template ``source``."""
    template = tmp_path / "template.jinja"
    template.write_text(source)
    qwen3 = str(shared / "tokenizers" / "qwen3")
    return ftx_cli("prepare", "-m", qwen3, "--chat-template", str(template), "--check-template")


def test_qwen3_template_masks_every_synthetic_conversation(shared: Path) -> None:
    model = shared / "tokenizers" / "qwen3"
    r = ftx_cli("prepare", "--model", str(model), "--check-template")
    assert r.returncode == 0, r.stderr
    for name in CONVERSATIONS:
        assert f"{name}:" in r.stdout
    assert "5 of 5 synthetic conversations rendered and masked" in r.stdout
    label, results = check_template(model=model)
    assert "qwen3" in label
    for res in results:
        trained = "".join(s.text for s in res.segments if s.trained)
        untrained = "".join(s.text for s in res.segments if not s.trained)
        # The answers and their end token are trained; the user's words are not.
        assert res.status == "ok" and trained.endswith("<|im_end|>"), res
        assert "<|im_start|>user" in untrained and "<|im_start|>user" not in trained
    tool = next(r for r in results if r.name == "tool call")
    trained = "".join(s.text for s in tool.segments if s.trained)
    assert '"name": "get_weather"' in trained and "temp_c" not in trained


def test_json_output_and_a_refused_shape(shared: Path, tmp_path: Path) -> None:
    # Plain Llama 3 writes no tools: the tool conversation is reported, not failed.
    r = ftx_cli(
        "prepare", "-m", str(shared / "tokenizers" / "llama3"), "--check-template", "--json"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    status = {x["name"]: x["status"] for x in out["results"]}
    assert status["tool call"] == "unsupported"
    assert status["single turn"] == "ok"


def test_a_template_that_drops_the_answers_fails(shared: Path, tmp_path: Path) -> None:
    r = check_with_qwen3(
        shared,
        tmp_path,
        "{% for m in messages %}{% if m.role != 'assistant' %}{{ m.content }}\n"
        "{% endif %}{% endfor %}",
    )
    assert r.returncode == 1
    assert "cannot mask: single turn" in r.stderr
    assert "mask_not_found" in r.stdout


def test_prepare_still_needs_inputs_and_out(shared: Path) -> None:
    r = ftx_cli("prepare", "-m", str(shared / "tokenizers" / "qwen3"))
    assert r.returncode == 2
    assert "--check-template" in r.stderr


def test_a_template_that_raises_on_everything_is_not_counted_as_masked(
    shared: Path, tmp_path: Path
) -> None:
    r = check_with_qwen3(shared, tmp_path, "{{ raise_exception('this model takes no chat') }}")
    assert r.returncode == 1, r.stdout
    assert "0 of 5 synthetic conversations rendered and masked; 5 refused" in r.stdout
    assert "the template rendered none of them" in r.stderr

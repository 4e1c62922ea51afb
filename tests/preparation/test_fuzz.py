"""The fuzzing harness: property tests over the reader, the formats, the template engine and the
encoder. Whatever the bytes, ftx returns a result or raises one of its own errors; it never
crashes, hangs or raises anything else. ``FUZZ_EXAMPLES`` sets the examples per property (CI
runs the default; ``make fuzz`` runs thousands). cargo-fuzz needs a nightly toolchain, which
this project's machines do not have, so the harness drives the real engine through its binding.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ftx
from ftx import _core

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Bytes that steer the reader: BOMs, brackets, quotes, escapes, newlines, invalid UTF-8.
PIECES = [
    b"\xef\xbb\xbf", b"\xff\xfe", b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\n", b"\r\n",
    b"\x00", b"\xc3", b"\xe2\x82", b'{"messages": [', b'{"role": "user", "content": "hi"}',
    b'{"role": "assistant", "content": "ok"}', b'"instruction": "a", "output": "b"', b"null",
    b'{"text": "t"}', b"1e999", b"-", b"    ",
]  # fmt: skip
raw_files = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=12)), max_size=40).map(
    b"".join
)


@FUZZ
@given(data=raw_files, name=st.sampled_from(["in.jsonl", "in.json", "in.txt", "in.jsonl.gz"]))
def test_any_bytes_in_any_input_kind(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, data: bytes, name: str
) -> None:
    d = tmp_path_factory.mktemp("fuzz")
    src = d / name
    src.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    try:
        r = ftx.prepare(src, model=tiny_model, out=d / "o")
    except ftx.FtxError:
        assert not (d / "o").exists() or (d / "o" / "manifest.json").is_file()
    else:
        assert r.accepted + r.rejected + r.duplicates == r.records_read
    assert src.exists()


# Template fragments: loops, filters, methods of the Python compatibility layer, raises.
FRAGMENTS = [
    "{% for m in messages %}", "{% endfor %}", "{{ m.content }}", "{{ m['role'] }}", "{% if ",
    "m.role == 'user' %}", "{% else %}", "{% endif %}", "{{ messages|length }}",
    "{{ raise_exception('no') }}", "{% set x = namespace(n=0) %}", "{{ x.n }}",
    "{{ tools|tojson }}",
    "{{ bos_token }}", "{% for i in range(9999) %}", "{{ m.content.strip().split('a') }}", "{{",
    "}}", "{%", "%}", "{{ (messages * 3)|join(',') }}", "{{ m.content|upper }}", "text",
    "{% generation %}", "{% endgeneration %}", "{{ '%s'|format(m) }}", "{{ m.tool_calls[0] }}",
]  # fmt: skip
templates = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)
RECORD = json.dumps(
    {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "ok"},
        ]
    }
)


@FUZZ
@given(source=templates, generation=st.booleans())
def test_any_template_renders_or_rejects(source: str, generation: bool) -> None:
    try:
        out = _core.render_chat(source, RECORD, add_generation_prompt=generation)
    except ftx.FtxError:
        return  # a template that does not compile is a TemplateError naming it
    assert set(out) in ({"text"}, {"reject"})
    if "reject" in out:
        assert out["reject"]["code"] in {"template_error", "bad_role_order", "template_budget"}


@FUZZ
@given(texts=st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_any_text_encodes_with_masks_that_cover_the_tokens(
    tiny_model: Path, texts: list[str]
) -> None:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)
    ]
    out = _core.preview([json.dumps({"messages": messages})], model_dir=tiny_model)
    item = out["items"][0]
    if "reject" in item:
        assert item["reject"]["code"]
        return
    assert len(item["ids"]) == len(item["mask"]) > 0
    assert set(item["mask"]) <= {0, 1}

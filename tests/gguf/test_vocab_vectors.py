"""The rebuilt tokenizer against llama.cpp's own test vectors, for every vocabulary GGUF there.

The ``.out`` files are llama.cpp's ids for each ``.inp`` string (``add_special=false``,
``parse_special=false``): the reference for what a GGUF model was trained to read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_support import VOCABS, gguf_metadata, vocab_cases

from ftx.gguf.tokenizer import tokenizer_json

pytestmark = pytest.mark.mlx

NAMES = sorted(
    p.name.removeprefix("ggml-vocab-").removesuffix(".gguf.gz")
    for p in VOCABS.glob("ggml-vocab-*.gguf.gz")
)


def test_the_seven_vocabularies_are_all_there() -> None:
    if not VOCABS.is_dir():
        pytest.skip(f"{VOCABS} is missing")
    expected = {"llama-spm", "llama-bpe", "phi-3", "qwen2", "deepseek-llm", "deepseek-coder"}
    assert expected | {"gpt-2"} <= set(NAMES)


# Test vectors whose vocabulary GGUF is not in ../shared/data (only the .inp/.out pairs were
# kept), so there is no vocabulary to build a tokenizer from and these cannot be checked.
# Listed so that a change in the data shows up here.
NO_GGUF = {
    "bert-bge",
    "command-r",
    "falcon",
    "gemma-4",
    "mpt",
    "qwen35",
    "refact",
    "starcoder",
}


def test_every_vector_file_without_a_vocabulary_is_known() -> None:
    if not VOCABS.is_dir():
        pytest.skip(f"{VOCABS} is missing")
    vectors = {
        p.name.removeprefix("ggml-vocab-").removesuffix(".gguf.out")
        for p in VOCABS.glob("ggml-vocab-*.gguf.out")
    }
    assert vectors - set(NAMES) == NO_GGUF


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer_matches_llama_cpp_ids(name: str, vocab_files: dict[str, Path]) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    meta = gguf_metadata(vocab_files[name])
    tok = tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json(meta)))
    # llama.cpp's parse_special=false: control tokens in the text are plain text.
    tok.encode_special_tokens = True
    cases = vocab_cases(name)
    assert len(cases) > 40
    wrong = []
    for text, ids in cases:
        got = tok.encode(text, add_special_tokens=False).ids
        if got != ids:
            wrong.append((text, ids, got))
    # The count per vocabulary, for the report (pytest -s, or -rA).
    print(f"{name}: {len(cases) - len(wrong)}/{len(cases)} llama.cpp test vectors matched")
    assert not wrong, f"{len(wrong)}/{len(cases)} differ, first: {wrong[0]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_decoding_gives_the_text_back(name: str, vocab_files: dict[str, Path]) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    meta = gguf_metadata(vocab_files[name])
    tok = tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json(meta)))
    for text, ids in vocab_cases(name):
        if name in ("llama-spm", "phi-3") and text.startswith(" "):
            continue  # SentencePiece cannot tell its own prefix space from one in the text
        assert tok.decode(ids, skip_special_tokens=False) == text

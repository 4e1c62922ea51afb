"""The embedded default, the real SmolLM2-135M-Instruct Q4_1 GGUF, converted and used.

Reference points that do not go through ftx: the GGUF file read by the ``gguf`` package, its
chat template rendered by transformers, mlx-lm's own loader and generator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ftx
from ftx.default_model import DefaultModel, cache_dir, default_model, embedded_gguf
from ftx.files import sha256_file

pytestmark = pytest.mark.mlx

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "Two plus two?"},
    ],
]


def _gguf_template() -> str:
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(embedded_gguf()))
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


@pytest.mark.slow
def test_converted_smollm2_answers_the_france_question(smollm2: DefaultModel) -> None:
    mlx_lm = pytest.importorskip("mlx_lm")
    model, tokenizer = mlx_lm.load(str(smollm2.path))
    prompt = tokenizer.apply_chat_template(CHATS[0], add_generation_prompt=True)
    # mlx-lm's default sampler is greedy (temperature 0).
    answer = mlx_lm.generate(model, tokenizer, prompt, max_tokens=24)
    print(f"SmolLM2 (converted): {answer!r}")
    assert "Paris" in answer


def test_chat_template_renders_as_the_gguf_template_does(smollm2: DefaultModel) -> None:
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2.path))
    own = _gguf_template()
    assert tok.chat_template == own
    for chat in CHATS:
        for gen in (False, True):
            got = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            want = tok.apply_chat_template(
                chat, chat_template=own, tokenize=False, add_generation_prompt=gen
            )
            assert got == want
            assert got.count("<|im_start|>") == len(chat) + gen + (chat[0]["role"] != "system")
    ids = tok.apply_chat_template(CHATS[0], tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    # The markers are single special tokens, and nothing is added in front (no bos in the file).
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") == 1
    assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 2
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == (
        "<|im_end|>",
        "<|im_end|>",
        "<|im_start|>",
    )


def test_ftx_prepare_accepts_the_converted_folder(smollm2: DefaultModel, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    data = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [*CHATS[0], {"role": "assistant", "content": f"Paris, {i}."}]}
        for i in range(20)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = ftx.prepare(data, out=tmp_path / "prepared", model=smollm2.path, valid=4)
    assert report.accepted == 20 and report.rejected == 0
    ds = ftx.load_dataset(tmp_path / "prepared")
    tokens, mask = ds[0]
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2.path))
    want = tok.apply_chat_template(rows[0]["messages"], tokenize=False)
    assert tok.decode(tokens.tolist()) == want
    trained = tok.decode(tokens[mask.astype(bool)].tolist())
    assert trained.startswith("Paris, ") and trained.endswith("<|im_end|>")


def test_the_tool_call_task_prepares_with_smollm2(smollm2: DefaultModel, tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from ftx.tasks import toolcall

    toolcall.write_dataset(tmp_path / "task", seed=0, train=24, valid=6, test=6)
    report = ftx.prepare(tmp_path / "task" / "train.jsonl", out=tmp_path / "p", model=smollm2.path)
    assert report.accepted == 24
    tok = tokenizers.Tokenizer.from_file(str(smollm2.path / "tokenizer.json"))
    rows = [json.loads(x) for x in (tmp_path / "task" / "train.jsonl").read_text().splitlines()]
    for (tokens, mask), row in zip(ftx.load_dataset(tmp_path / "p"), rows, strict=True):
        trained = tok.decode(tokens[mask.astype(bool)].tolist(), skip_special_tokens=False)
        # Only the call is trained: the function list and the request are context.
        assert trained == row["messages"][-1]["content"] + "<|im_end|>"


def test_the_default_model_is_converted_once_then_reused(
    smollm2: DefaultModel, tmp_path: Path
) -> None:
    assert smollm2.converted
    assert smollm2.sha256 == sha256_file(embedded_gguf())
    assert smollm2.path.name.startswith("SmolLM2-135M-Instruct.Q4_1-" + smollm2.sha256[:16])
    again = default_model(cache=smollm2.path.parent)
    assert (again.path, again.converted) == (smollm2.path, False)
    manifest = json.loads((smollm2.path / "ftx_convert.json").read_text())
    assert manifest["source"]["sha256"] == smollm2.sha256
    assert manifest["model"]["tensors"] == {"f32": 61, "q4": 210, "q8": 1}
    # A folder that does not hold what its name promises is converted again.
    copy = tmp_path / smollm2.path.name
    copy.mkdir()
    (copy / "ftx_convert.json").write_text(json.dumps({**manifest, "files": {"x.bin": 1}}))
    redone = default_model(cache=tmp_path)
    assert redone.converted and (copy / "model.safetensors").is_file()
    assert default_model(cache=tmp_path).converted is False


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "ftx"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    want = "Library/Caches/ftx" if os.uname().sysname == "Darwin" else ".cache/ftx"
    assert cache_dir() == tmp_path / "home" / want

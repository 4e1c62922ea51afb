"""Model folders as Hugging Face ships them: only a SentencePiece ``tokenizer.model`` (converted
once to ``tokenizer.json``, checked against SentencePiece itself on the real Mistral models),
``chat_template.jinja`` / ``chat_template.json``, and a folder whose tokenizer, config.json and
weights disagree (refused, naming the file, before anything is written)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sentencepiece

import ftx
from ftx import _core
from ftx.data import model_tokenizer_sha256
from ftx.errors import ConfigError
from ftx.model_folder import tokenizer_folder, tokenizer_json

MISTRAL = {
    "v1": "tokenizer.model.v1",
    "v2": "mistral_instruct_tokenizer_240216.model.v2",
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
}


def real_texts(shared: Path) -> list[str]:
    """Instructions, answers and conversation turns of three real datasets: English prose,
    code, tables, runs of spaces and newlines, Chinese."""
    data = shared / "datasets"
    texts = []
    for r in json.loads((data / "llama_factory" / "alpaca_en_demo.json").read_text()):
        texts += [r["instruction"], r["output"]]
    for r in json.loads((data / "llama_factory" / "alpaca_zh_demo.json").read_text())[:300]:
        texts += [r["instruction"], r["output"]]
    for r in json.loads((data / "fastchat" / "dummy_conversation.json").read_text()):
        texts += [c["value"] for c in r["conversations"]]
    return [t for t in texts if t]


def engine_ids(folder: Path, texts: list[str]) -> list[list[int]]:
    out = _core.preview([json.dumps({"text": t}) for t in texts], model_dir=folder)
    return [item["ids"] for item in out["items"]]


def sentencepiece_folder(root: Path, shared: Path, version: str, config: bool = False) -> Path:
    """A folder with only the SentencePiece model (and, with ``config``, the real Mistral
    v0.1 ``tokenizer_config.json``: ``LlamaTokenizer``, ``add_bos_token``)."""
    folder = root / version
    folder.mkdir(parents=True)
    mistral = shared / "tokenizers" / "mistral"
    shutil.copyfile(mistral / MISTRAL[version], folder / "tokenizer.model")
    if config:
        shutil.copyfile(
            mistral / "hf_mistral_7b_v0.1" / "tokenizer_config.json",
            folder / "tokenizer_config.json",
        )
    return folder


@pytest.mark.parametrize("version", sorted(MISTRAL))
def test_a_sentencepiece_only_folder_encodes_as_sentencepiece_does(
    shared: Path, tmp_path: Path, version: str
) -> None:
    texts = real_texts(shared)
    folder = sentencepiece_folder(tmp_path, shared, version)
    assert tokenizer_folder(folder) == folder
    assert (folder / "tokenizer.json").is_file()
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    got = engine_ids(folder, texts)
    matched = sum(a == sp.encode(t) for a, t in zip(got, texts, strict=True))
    print(f"{version}: {matched}/{len(texts)} texts encode as SentencePiece encodes them")
    assert matched == len(texts) > 4000
    # With Mistral's real tokenizer_config.json (LlamaTokenizer, add_bos_token), BOS is added
    # and the rest is still SentencePiece's.
    configured = sentencepiece_folder(tmp_path / "configured", shared, version, config=True)
    tokenizer_folder(configured)
    got = engine_ids(configured, texts[:200])
    assert got == [[1, *sp.encode(t)] for t in texts[:200]]


def test_the_conversion_of_v1_equals_the_published_tokenizer_json(
    shared: Path, tmp_path: Path
) -> None:
    texts = real_texts(shared)
    folder = sentencepiece_folder(tmp_path, shared, "v1", config=True)
    tokenizer_folder(folder)
    published = shared / "tokenizers" / "mistral" / "hf_mistral_7b_v0.1"
    assert engine_ids(folder, texts) == engine_ids(published, texts)


def test_prepare_converts_once_and_never_writes_over_a_tokenizer(
    shared: Path, tmp_path: Path, example_data: Path
) -> None:
    folder = sentencepiece_folder(tmp_path, shared, "v1", config=True)
    heard: list[str] = []
    r = ftx.prepare(
        example_data, model=folder, out=tmp_path / "a", chat_template="chatml", say=heard.append
    )
    written = folder / "tokenizer.json"
    assert heard == [f"{folder / 'tokenizer.model'} converted to {written}"]
    # The artifact records the converted tokenizer, so train's check of the model passes.
    assert r.manifest["tokenizer"]["sha256"] == model_tokenizer_sha256(folder)
    assert r.manifest["tokenizer"]["add_bos_token"] is True
    before = written.stat()
    ftx.prepare(
        example_data, model=folder, out=tmp_path / "b", chat_template="chatml", say=heard.append
    )
    assert len(heard) == 1 and written.stat().st_mtime_ns == before.st_mtime_ns
    # A tokenizer.json that ftx did not write is the folder's: used as it is, never replaced.
    own = tmp_path / "own"
    own.mkdir()
    shutil.copyfile(folder / "tokenizer.model", own / "tokenizer.model")
    theirs = (
        shared / "tokenizers" / "mistral" / "hf_mistral_7b_v0.1" / "tokenizer.json"
    ).read_bytes()
    (own / "tokenizer.json").write_bytes(theirs)
    assert tokenizer_folder(own) == own and (own / "tokenizer.json").read_bytes() == theirs
    assert sorted(p.name for p in own.iterdir()) == ["tokenizer.json", "tokenizer.model"]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder another user can read (pytest's tmp_path is its owner's only)."""
    path = Path(tempfile.mkdtemp(prefix="ftx-hf-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_read_only_folder_gets_its_tokenizer_json_in_the_cache(
    shared: Path,
    open_dir: Path,
    tmp_path: Path,
    example_data: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = sentencepiece_folder(open_dir, shared, "v3", config=True)
    for f in folder.iterdir():
        f.chmod(0o444)
    folder.chmod(0o555)
    cache = open_dir / "cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    # As root every folder is writable: the conversion runs as an unprivileged user instead.
    prefix = [] if os.geteuid() else ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no folder here is read-only")
    code = "import sys; from pathlib import Path; from ftx.model_folder import tokenizer_folder; "
    code += "print(tokenizer_folder(Path(sys.argv[1]), say=print))"
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code, str(folder)],
        env={**os.environ, "XDG_CACHE_HOME": str(cache), "HOME": str(cache)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    converted = Path(out[-1])
    said = f"{folder} cannot be written: its tokenizer.model converted to {converted}/"
    assert out[0] == said + "tokenizer.json"
    assert converted.parent == cache / "ftx" / "tokenizers"
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.model", "tokenizer_config.json"]
    assert sorted(p.name for p in converted.iterdir()) == [
        "source.txt",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    # Everything that reads the model's tokenizer finds that conversion.
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert tokenizer_json(folder) == converted / "tokenizer.json"
    r = ftx.prepare(example_data, model=folder, out=tmp_path / "a", chat_template="chatml")
    assert r.manifest["tokenizer"]["sha256"] == model_tokenizer_sha256(folder) is not None
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.model", "tokenizer_config.json"]
    # Its ids are those the same folder gets when it can be written.
    writable = sentencepiece_folder(tmp_path / "w", shared, "v3", config=True)
    texts = real_texts(shared)[:300]
    assert engine_ids(converted, texts) == engine_ids(tokenizer_folder(writable), texts)


def test_chat_template_files_win_in_transformers_order(tmp_path: Path, tiny_model: Path) -> None:
    """``chat_template.jinja`` over ``chat_template.json`` over tokenizer_config.json's, and the
    template used is in the provenance."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    data = tmp_path / "d.jsonl"
    record = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    }
    data.write_text(json.dumps(record) + "\n")
    loop = "{% for m in messages %}<|im_start|>{{ m.role }}{tag}\n{{ m.content }}<|im_end|>\n"
    loop += "{% endfor %}"

    def rendered(out: str) -> tuple[str, str]:
        r = ftx.prepare(data, model=folder, out=tmp_path / out)
        ds = ftx.load_dataset(tmp_path / out, split="train")
        dec = _core.Decoder(model_dir=str(folder))
        text = "".join(s["text"] for s in dec.segments(*ds[0]))
        return text, r.provenance

    base, p0 = rendered("config")
    (folder / "chat_template.json").write_text(
        json.dumps({"chat_template": loop.replace("{tag}", " J")})
    )
    from_json, p1 = rendered("json")
    (folder / "chat_template.jinja").write_text(loop.replace("{tag}", " K"))
    from_jinja, p2 = rendered("jinja")
    assert "<|im_start|>user J\nHi" in from_json and "user K" in from_jinja
    assert " J" not in base and " K" not in from_json
    assert len({p0, p1, p2}) == 3


def test_a_folder_whose_parts_disagree_is_refused_before_anything_is_written(
    tmp_path: Path, example_data: Path
) -> None:
    from tiny_models import build_model

    model = build_model(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    rows = config["vocab_size"]
    (model / "config.json").write_text(json.dumps({**config, "vocab_size": rows + 7}))
    with pytest.raises(ConfigError) as e:
        ftx.prepare(example_data, model=model, out=tmp_path / "out")
    assert str(e.value) == (
        f"{model / 'config.json'}: vocab_size is {rows + 7}, but the embedding "
        f"model.embed_tokens.weight in model.safetensors has {rows} rows: config.json and the "
        "weights are of different models"
    )
    assert not (tmp_path / "out").exists()
    # A tokenizer with ids past the embedding's rows: another model's tokenizer.
    (model / "config.json").write_text(json.dumps(config))
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["added_tokens"].append({**tok["added_tokens"][-1], "id": rows + 3, "content": "<x>"})
    (model / "tokenizer.json").write_text(json.dumps(tok))
    cli = subprocess.run(
        [
            Path(sys.executable).parent / "ftx",
            "prepare",
            str(example_data),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2, cli.stderr
    assert (
        f"{model / 'tokenizer.json'}: has token ids up to {rows + 3}, but the embedding "
        f"model.embed_tokens.weight in model.safetensors has {rows} rows: the tokenizer is not "
        "this model's"
    ) in cli.stderr
    assert not (tmp_path / "out").exists()


def test_every_eos_of_generation_config_is_trained_after_the_turn_end(
    tmp_path: Path, tiny_model: Path
) -> None:
    """A reply closed by ``<|im_end|><|endoftext|>``: the config's EOS is ``<|im_end|>``; with
    generation_config.json listing both, the model learns to write the second too, and the
    list is in the provenance."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    closing = "{% if m.role == 'assistant' %}<|endoftext|>{% endif %}"
    config["chat_template"] = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>"
        + closing
        + "\n{% endfor %}"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    data = tmp_path / "d.jsonl"
    record = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    }
    data.write_text(json.dumps(record) + "\n")

    def trained(out: str) -> tuple[list[str], ftx.PrepareReport]:
        r = ftx.prepare(data, model=folder, out=tmp_path / out)
        ds = ftx.load_dataset(tmp_path / out, split="train")
        dec = _core.Decoder(model_dir=str(folder))
        return [s["text"] for s in dec.segments(*ds[0]) if s["trained"]], r

    alone, r0 = trained("one")
    assert alone == ["Yo<|im_end|>"] and "generation_eos" not in r0.manifest["tokenizer"]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    both, r1 = trained("two")
    assert both == ["Yo<|im_end|><|endoftext|>"]
    assert r1.manifest["tokenizer"]["generation_eos"] == [0, 2]
    assert r1.provenance != r0.provenance


def test_shards_of_a_sentencepiece_folder_merge_into_prepares_artifact(
    shared: Path, tmp_path: Path, example_data: Path
) -> None:
    from ftx.preparation import merge, prepare_shard

    folder = sentencepiece_folder(tmp_path, shared, "v1", config=True)
    shards = []
    for i in range(2):
        prepare_shard(
            example_data,
            out=tmp_path / f"s{i}",
            shard=(i, 2),
            model=folder,
            chat_template="mistral",
        )
        shards.append(tmp_path / f"s{i}")
    assert (folder / "tokenizer.json").is_file()
    merged = merge(shards, out=tmp_path / "merged")
    local = ftx.prepare(example_data, out=tmp_path / "local", model=folder, chat_template="mistral")
    assert local.accepted > 300
    assert merged.provenance == local.provenance
    for f in sorted((tmp_path / "local").iterdir()):
        assert (tmp_path / "merged" / f.name).read_bytes() == f.read_bytes(), f.name


def test_text_that_spells_a_control_token_is_that_token(shared: Path, tmp_path: Path) -> None:
    """v3's ``[INST]`` is a control token: SentencePiece's ``encode`` never emits one from text,
    the converted tokenizer (as transformers' own) parses it as the token, which the [INST]
    templates rely on."""
    folder = sentencepiece_folder(tmp_path, shared, "v3")
    tokenizer_folder(folder)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    inst, end = sp.piece_to_id("[INST]"), sp.piece_to_id("[/INST]")
    (ids,) = engine_ids(folder, ["[INST] Hi [/INST]"])
    assert inst in ids and end in ids
    assert inst not in sp.encode("[INST] Hi [/INST]")

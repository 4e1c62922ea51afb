"""``ftx generate`` and ``ftx chat`` through their Python functions and the CLI, on a tiny random
model: prompts rendered by the one engine, seeds, adapters, fused folders, EOS tokens, the
chat's commands and the KV cache it keeps between turns (every reply is the one a fresh
generation of the whole conversation gives)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ftx import ConfigError, DataError, FtxFileNotFoundError
from ftx.inference import (
    GenerateResult,
    Prompt,
    Sampling,
    conversation,
    generate,
    open_chat,
    read_prompts,
    repl,
)

pytestmark = pytest.mark.mlx

GREEDY = Sampling(max_tokens=12)
SAMPLED = Sampling(temperature=1.0, max_tokens=16, seed=7)
QUESTIONS = ("Hi", "What is the capital of France?", "Count to three")
PIRATE = "You are a pirate."


def texts(result: GenerateResult) -> list[str]:
    return [o.text for o in result.outputs]


def prompts(*questions: str) -> list[Prompt]:
    return [Prompt(conversation(q)) for q in questions]


def test_the_prompt_is_the_model_template_with_the_generation_prompt(tiny_llama: Path) -> None:
    r = generate(tiny_llama, "Hi", system="Be brief.", sampling=GREEDY)
    (out,) = r.outputs
    assert out.prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # a random model never says its EOS token within 12 tokens: the reply was cut there
    assert out.tokens == 12 and out.finish_reason == "length" and out.text


def test_same_seed_same_text_another_seed_another(tiny_llama: Path) -> None:
    a = generate(tiny_llama, prompts(*QUESTIONS), sampling=SAMPLED)
    b = generate(tiny_llama, prompts(*QUESTIONS), sampling=SAMPLED)
    assert texts(a) == texts(b)
    c = generate(tiny_llama, prompts(*QUESTIONS), sampling=replace(SAMPLED, seed=8))
    assert texts(c) != texts(a)
    greedy = generate(tiny_llama, prompts(*QUESTIONS), sampling=replace(GREEDY, max_tokens=16))
    assert texts(greedy) != texts(a)
    # top_k reaches the sampler: keeping one token at temperature 1 is greedy decoding
    top1 = generate(tiny_llama, prompts(*QUESTIONS), sampling=replace(SAMPLED, top_k=1))
    assert texts(top1) == texts(greedy)


def test_the_adapter_changes_the_answer_and_the_fused_folder_gives_the_same(
    tiny_llama: Path, lora_run: Path, fused: Path
) -> None:
    base = generate(tiny_llama, prompts(*QUESTIONS), sampling=GREEDY)
    adapted = generate(tiny_llama, prompts(*QUESTIONS), adapter=lora_run, sampling=GREEDY)
    merged = generate(fused, prompts(*QUESTIONS), sampling=GREEDY)
    assert texts(adapted) != texts(base)
    assert texts(merged) == texts(adapted)
    assert adapted.adapter == lora_run and merged.adapter is None


def _first_greedy_token(model: Path, question: str) -> int:
    import mlx.core as mx

    from ftx.evaluation import generation

    loaded, _, _ = generation.load(model)
    ids = generation.prompt_tokens(model, [(conversation(question), None)])[0]
    assert isinstance(ids, list)
    return int(mx.argmax(loaded(mx.array([ids]))[0, -1]).item())


def test_generation_stops_at_every_eos_token_of_the_generation_config(
    tiny_llama: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    first = _first_greedy_token(tiny_llama, "Hi")
    im_end = 2  # <|im_end|> in the example tokenizer, the tokenizer's own EOS
    tokenizer = json.loads((tiny_llama / "tokenizer.json").read_text(encoding="utf-8"))
    assert {t["content"]: t["id"] for t in tokenizer["added_tokens"]}["<|im_end|>"] == im_end
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": [im_end, first]}))
    (out,) = generate(model, "Hi", sampling=GREEDY).outputs
    assert (out.text, out.tokens, out.finish_reason) == ("", 0, "stop")
    chat = open_chat(model, sampling=GREEDY)
    assert "".join(chat.send("Hi")) == "" and chat.last_finish_reason == "stop"
    # the same model without that file goes on past that token
    (out,) = generate(tiny_llama, "Hi", sampling=GREEDY).outputs
    assert out.tokens == 12


def test_chat_replies_are_fresh_generations_of_the_conversation(
    tiny_llama: Path, lora_run: Path
) -> None:
    chat = open_chat(tiny_llama, adapter=lora_run, sampling=GREEDY)
    first = "".join(chat.send("Hi"))
    first_prompt = chat.last_prompt_tokens
    assert chat.last_computed_tokens == first_prompt
    second = "".join(chat.send("Tell me more"))
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in chat.messages[1::2]] == [first, second]
    # the second turn did not compute the first prompt again: it came from the cache
    assert chat.last_computed_tokens <= chat.last_prompt_tokens - first_prompt
    expected = generate(
        tiny_llama,
        [Prompt(chat.messages[:1]), Prompt(chat.messages[:3])],
        adapter=lora_run,
        sampling=GREEDY,
    )
    assert texts(expected) == [first, second]


def test_reset_and_system_prompt(tiny_llama: Path) -> None:
    chat = open_chat(tiny_llama, sampling=GREEDY)
    plain = "".join(chat.send("Hi"))
    chat.reset()
    assert chat.messages == []
    assert "".join(chat.send("Hi")) == plain  # a new conversation, from the trimmed cache
    chat.reset()
    chat.system = PIRATE
    pirate = "".join(chat.send("Hi"))
    assert pirate != plain
    assert [pirate] == texts(generate(tiny_llama, "Hi", system=PIRATE, sampling=GREEDY))
    assert chat.transcript()["system"] == PIRATE


def test_chat_sampling_is_seeded(tiny_llama: Path) -> None:
    def talk(sampling: Sampling) -> list[str]:
        chat = open_chat(tiny_llama, sampling=sampling)
        return ["".join(chat.send(q)) for q in QUESTIONS]

    assert talk(SAMPLED) == talk(SAMPLED)
    assert talk(replace(SAMPLED, seed=8)) != talk(SAMPLED)


def test_a_stopped_reply_stands_and_the_conversation_goes_on(tiny_llama: Path) -> None:
    chat = open_chat(tiny_llama, sampling=GREEDY)
    stream = chat.send("Hi")
    piece = next(stream)
    stream.close()  # what Ctrl-C does in the terminal
    assert chat.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": piece},
    ]
    again = "".join(chat.send("Go on"))
    assert [again] == texts(generate(tiny_llama, [Prompt(chat.messages[:3])], sampling=GREEDY))


def test_the_loop_runs_commands_and_streams_replies(tiny_llama: Path) -> None:
    chat = open_chat(tiny_llama, sampling=GREEDY)
    lines = ["Hi", "", "/system Be brief.", "/nope", "/help", "Hi", "/reset", "/quit", "unread"]
    out: list[str] = []
    replies = list(repl(chat, lines, out.append))
    shown = "".join(out)
    assert len(replies) == 2 and all(r["role"] == "assistant" for r in replies)
    for r in replies:
        assert r["content"] + "\n" in shown  # streamed, then the line ended
    assert "(system prompt: 'Be brief.')" in shown
    assert "(unknown command /nope; /help lists them)" in shown
    assert "/reset" in shown and "(conversation cleared)" in shown
    assert chat.messages == [] and chat.system == "Be brief."
    out.clear()
    list(repl(chat, ["/system"], out.append))
    assert chat.system is None and out == ["(no system prompt)\n"]


def test_a_message_the_template_cannot_render_is_reported_and_the_chat_goes_on(
    tiny_llama: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{% if 'forbidden' in m.content %}"
        "{{ raise_exception('no forbidden words') }}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    chat = open_chat(model, sampling=GREEDY)
    out: list[str] = []
    replies = list(repl(chat, ["a forbidden word", "Hi"], out.append))
    assert "no forbidden words" in out[0] and len(replies) == 1
    assert [m["content"] for m in chat.messages[:1]] == ["Hi"]
    with pytest.raises(DataError, match=r"cannot render this prompt.*no forbidden words"):
        generate(model, "forbidden")


# --- prompt files -------------------------------------------------------------------------


def test_a_prompts_file_is_answered_line_by_line(tiny_llama: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "Hi", "system": PIRATE},
        None,
        {"messages": [{"role": "user", "content": "Count to three"}]},
    ]
    path.write_text("".join("\n" if x is None else json.dumps(x) + "\n" for x in lines))
    r = generate(tiny_llama, path, sampling=GREEDY)
    assert [o.source for o in r.outputs] == [f"{path}:1", f"{path}:3"]
    expected = generate(
        tiny_llama,
        [Prompt(conversation("Hi", PIRATE)), *prompts("Count to three")],
        sampling=GREEDY,
    )
    assert texts(r) == texts(expected)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', 'expected an object with "prompt" or "messages"'),
        ('{"text": "x"}', 'expected an object with "prompt" or "messages"'),
        ('{"prompt": "a", "messages": []}', 'expected an object with "prompt" or "messages"'),
        ('{"prompt": 3}', "'prompt' and 'system' must be strings"),
        ('{"messages": []}', "'messages' must be a non-empty list"),
        ('{"messages": [{"content": "x"}]}', "messages\\[0\\] is not an object with a string"),
        ('{"messages": [{"role": "user", "content": "x"}], "tools": {}}', "'tools' must be"),
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"p\.jsonl:2: {message}"):
        read_prompts(path)


def test_a_hugging_face_folder_with_only_tokenizer_model_generates(
    shared: Path, tmp_path: Path
) -> None:
    """Mistral as downloaded: tokenizer.model (v1), its tokenizer_config.json, the template in
    chat_template.jinja, two EOS ids in generation_config.json, and the weights in shards."""
    from tiny_models import build_model, shard

    model = build_model(tmp_path / "mistral", vocab_size=32000)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    mistral = shared / "tokenizers" / "mistral"
    shutil.copyfile(mistral / "tokenizer.model.v1", model / "tokenizer.model")
    shutil.copyfile(
        mistral / "hf_mistral_7b_v0.1" / "tokenizer_config.json", model / "tokenizer_config.json"
    )
    shutil.copyfile(
        mistral / "chat_template.axolotl_mistral_v1.jinja", model / "chat_template.jinja"
    )
    shard(model)
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    (out,) = generate(model, "Hi", sampling=GREEDY).outputs
    assert (model / "tokenizer.json").is_file()
    assert 0 < out.tokens <= 12
    # the prompt the model continued: the .jinja's, tokenized as the tokenizer.json that
    # Hugging Face publishes for this model tokenizes it
    from ftx import _core
    from ftx.evaluation.generation import prompt_tokens

    messages = [{"role": "user", "content": "Hi"}]
    (ids,) = prompt_tokens(model, [(messages, None)])
    published = _core.prompts(
        [json.dumps({"messages": messages})],
        model_dir=mistral / "hf_mistral_7b_v0.1",
        chat_template=str(model / "chat_template.jinja"),
    )["items"][0]
    assert published["text"].startswith("<s> [INST] Hi [/INST]")
    assert ids == published["ids"]


def test_inputs_are_checked_before_anything_loads(tiny_llama: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"top_p = 0: must be in \(0, 1\]"):
        generate(tiny_llama, "Hi", sampling=Sampling(top_p=0))
    with pytest.raises(ConfigError, match=r"top_k = -1.*max_tokens = 0"):
        open_chat(tiny_llama, sampling=Sampling(top_k=-1, max_tokens=0))
    with pytest.raises(FtxFileNotFoundError, match="not a model folder"):
        generate(tmp_path, "Hi")
    with pytest.raises(FtxFileNotFoundError, match=r"no adapters\.safetensors"):
        open_chat(tiny_llama, adapter=tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no prompts"):
        generate(tiny_llama, tmp_path / "empty.jsonl")


# --- the CLI ------------------------------------------------------------------------------


def _cli(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def test_cli_generate_prints_json_or_the_answers(
    tiny_llama: Path, lora_run: Path, tmp_path: Path
) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    expected = texts(generate(tiny_llama, path, adapter=lora_run, sampling=SAMPLED))
    args = ("--adapter", lora_run, "--temperature", "1", "--max-tokens", "16", "--seed", "7")
    done = _cli("generate", tiny_llama, "--prompts", path, *args, "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["format"] == "ftx-generate" and body["sampling"]["seed"] == 7
    assert [o["text"] for o in body["outputs"]] == expected
    done = _cli("generate", tiny_llama, "--prompt", "Hi", "--max-tokens", "12", "--quiet")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == texts(generate(tiny_llama, "Hi", sampling=GREEDY))[0] + "\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "give --prompt TEXT or --prompts FILE.jsonl"),
        (["--prompt", "a", "--prompts", "x.jsonl"], 2, "one of the two"),
        (["--prompt", "a", "--top-p", "0"], 2, "top_p = 0.0: must be in (0, 1]"),
        (["--prompt", "a", "--temperature", "-1"], 2, "temperature = -1.0"),
        (["--prompts", "missing.jsonl"], 2, "missing.jsonl: no such prompts file"),
        (["--prompt", "a", "--adapter", "nowhere"], 2, "nowhere: no adapters.safetensors"),
    ],
)
def test_cli_generate_exit_codes(
    tiny_llama: Path, args: list[str], code: int, message: str
) -> None:
    done = _cli("generate", tiny_llama, *args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and done.stdout == ""


def test_cli_generate_names_the_bad_line(tiny_llama: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"\n')
    done = _cli("generate", tiny_llama, "--prompts", path)
    assert done.returncode == 1 and f"{path}:2: not JSON" in done.stderr


def test_cli_chat_json_reads_messages_from_stdin(tiny_llama: Path, fused: Path) -> None:
    stdin = "Hi\n/system You are a pirate.\nHi\n/reset\nHi\n"
    done = _cli("chat", fused, "--max-tokens", "12", "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["format"] == "ftx-chat" and body["system"] == PIRATE
    assert body["notes"] == [f"(system prompt: {PIRATE!r})", "(conversation cleared)"]
    expected = texts(generate(fused, "Hi", system=PIRATE, sampling=GREEDY))
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": expected[0]},
    ]
    done = _cli("chat", tiny_llama, "--top-k", "-2", stdin="")
    assert done.returncode == 2 and "top_k = -2" in done.stderr

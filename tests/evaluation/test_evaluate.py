"""``ftx evaluate`` on tiny random models: the loss is the direct computation, adapters change
it, sampling options reach the sampler, and the CLI writes and prints what it says."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import seal, write_lora_run

from ftx import ConfigError, evaluate
from ftx.data import load_dataset

pytestmark = pytest.mark.mlx

RECORDS = [
    {
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    }
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    },
    {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]},
    {
        "messages": [
            {"role": "user", "content": "Count to three"},
            {"role": "assistant", "content": "1 2 3"},
        ]
    },
]


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _jsonl(tmp_path_factory.mktemp("heldout") / "test.jsonl", RECORDS)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return write_lora_run(tmp_path_factory.mktemp("runs") / "run", tiny_llama)


def _direct_loss(model_dir: Path, prepared: Path, adapter: Path | None = None) -> float:
    """Mean next-token cross-entropy at mask == 1 positions, record by record, full logits."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import load

    model, _ = load(str(model_dir), adapter_path=None if adapter is None else str(adapter))
    model.eval()
    total, count = 0.0, 0
    for tokens, mask in load_dataset(prepared, "test"):
        logits = model(mx.array(tokens[None, :-1].astype(np.int32)))[0].astype(mx.float32)
        ce = np.array(nn.losses.cross_entropy(logits, mx.array(tokens[1:].astype(np.int32))))
        trained = mask[1:] == 1
        total += float(ce[trained].sum())
        count += int(trained.sum())
    return total / count


def test_loss_and_perplexity_are_the_direct_computation(tiny_llama: Path, prepared: Path) -> None:
    r = evaluate(tiny_llama, data=prepared, batch_size=3)
    assert r.adapted is None and r.sampling is None and r.base.generation is None
    loss = r.base.loss
    assert loss is not None
    ds = load_dataset(prepared, "test")
    assert loss.records == len(ds) and loss.truncated_records == 0
    # The first token of a record is never a target.
    assert loss.trained_tokens == sum(int(m[1:].sum()) for _, m in ds)
    assert loss.loss == pytest.approx(_direct_loss(tiny_llama, prepared), rel=1e-4)
    assert loss.perplexity == pytest.approx(math.exp(loss.loss))
    # A random model over this vocabulary is near uniform: loss near log(vocab).
    assert 4.0 < loss.loss < 8.0
    cut = evaluate(tiny_llama, data=prepared, max_seq_length=16).base.loss
    assert cut is not None and cut.truncated_records > 0
    assert cut.trained_tokens == sum(int(m[1:17].sum()) for _, m in ds)


def _with_shared_head(prepared: Path, out: Path, head: int) -> Path:
    """The test split of ``prepared`` with the same first ``head`` tokens in every record and
    nothing trained there, as records sharing a system prompt are."""
    shutil.copytree(prepared, out)
    manifest = json.loads((out / "manifest.json").read_text())
    files = manifest["splits"]["test"]["files"]
    tokens, mask = (np.load(out / files[k]) for k in ("tokens", "mask"))
    offsets = np.load(out / files["offsets"]).astype(np.int64)
    shared = tokens[offsets[0] : offsets[0] + head].copy()
    for a, b in itertools.pairwise(offsets):
        tokens[a : a + head] = shared
        mask[a : a + head + 1] = 0
        mask[b - 2 : b] = 1
    np.save(out / files["tokens"], tokens)
    np.save(out / files["mask"], mask)
    manifest["splits"]["test"]["trained_tokens"] = int(mask.sum())
    return seal(out, manifest)


def test_a_shared_head_computed_once_gives_the_same_loss(
    tiny_llama: Path, prepared: Path, tmp_path: Path
) -> None:
    from ftx.evaluation.generation import _loss_prefix
    from ftx.training.batching import Plan

    data = _with_shared_head(prepared, tmp_path / "shared", head=6)
    plan = Plan(load_dataset(data, "test"), 3, 256, packing=False, seed=None)
    assert _loss_prefix(plan.ds, plan) == 6
    r = evaluate(tiny_llama, data=data, batch_size=3)
    assert r.base.loss is not None
    assert r.base.loss.loss == pytest.approx(_direct_loss(tiny_llama, data), rel=1e-4)


def test_the_adapter_changes_the_loss_and_the_base_stays_the_base(
    tiny_llama: Path, prepared: Path, run_dir: Path, tmp_path: Path
) -> None:
    r = evaluate(tiny_llama, adapter=run_dir, data=prepared, out=tmp_path / "eval")
    assert r.adapted is not None and r.adapted.loss is not None and r.base.loss is not None
    assert r.base.loss.loss == pytest.approx(_direct_loss(tiny_llama, prepared), rel=1e-4)
    assert r.adapted.loss.loss == pytest.approx(
        _direct_loss(tiny_llama, prepared, run_dir), rel=1e-4
    )
    assert abs(r.adapted.loss.loss - r.base.loss.loss) > 1e-3
    assert r.delta()["loss"] == pytest.approx(r.adapted.loss.loss - r.base.loss.loss)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["adapted"]["loss"]["loss"] == r.adapted.loss.loss
    assert saved["delta"]["perplexity"] == pytest.approx(
        r.adapted.loss.perplexity - r.base.loss.perplexity
    )


def test_data_of_another_tokenizer_is_refused(
    tiny_llama: Path, prepared: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"another tokenizer.*prepare it again"):
        evaluate(tiny_llama, data=other)
    with pytest.raises(ConfigError, match=r"split = 'nope'"):
        evaluate(tiny_llama, data=prepared, split="nope")


def _outputs(model: Path, heldout: Path, **sampling: Any) -> list[str]:
    r = evaluate(model, data=heldout, **sampling)
    assert r.base.generation is not None and r.sampling is not None
    for key, value in sampling.items():
        assert getattr(r.sampling, key) == value
    return r.base.generation.outputs


def test_sampling_options_change_the_outputs(tiny_llama: Path, heldout: Path) -> None:
    greedy = _outputs(tiny_llama, heldout, temperature=0.0, seed=1, max_tokens=12)
    assert _outputs(tiny_llama, heldout, temperature=0.0, seed=2, max_tokens=12) == greedy
    hot1 = _outputs(tiny_llama, heldout, temperature=1.0, seed=1, max_tokens=12)
    hot2 = _outputs(tiny_llama, heldout, temperature=1.0, seed=2, max_tokens=12)
    assert hot1 != hot2 and hot1 != greedy
    assert _outputs(tiny_llama, heldout, temperature=1.0, seed=1, max_tokens=12) == hot1
    # A tiny nucleus leaves only the top token: greedy again, whatever the temperature.
    assert (
        _outputs(tiny_llama, heldout, temperature=1.0, top_p=1e-6, seed=1, max_tokens=12) == greedy
    )
    short = evaluate(tiny_llama, data=heldout, max_tokens=3)
    assert short.base.generation is not None
    assert 0 < short.base.generation.generated_tokens <= 3 * len(RECORDS)
    assert all(g.startswith(s) for g, s in zip(greedy, short.base.generation.outputs, strict=True))


def test_a_reference_equal_to_the_output_is_an_exact_match(
    tiny_llama: Path, heldout: Path, tmp_path: Path
) -> None:
    outputs = _outputs(tiny_llama, heldout, max_tokens=8)
    records = [
        {"messages": [*r["messages"][:-1], {"role": "assistant", "content": o}]}
        for r, o in zip(RECORDS, outputs, strict=True)
    ]
    r = evaluate(tiny_llama, data=_jsonl(tmp_path / "echo.jsonl", records), max_tokens=8)
    assert r.base.generation is not None
    assert r.base.generation.rates.exact_match == 1.0


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", "evaluate", *map(str, args)],
        capture_output=True,
        text=True,
    )


def test_cli_prints_json_and_writes_results_next_to_the_run(
    tiny_llama: Path, prepared: Path, heldout: Path, run_dir: Path
) -> None:
    out = _cli(
        "--model",
        tiny_llama,
        "--adapter",
        run_dir,
        "--data",
        prepared,
        "--data",
        heldout,
        "--max-tokens",
        "5",
        "--temperature",
        "0.7",
        "--seed",
        "4",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["sampling"] == {"temperature": 0.7, "top_p": 1.0, "max_tokens": 5, "seed": 4}
    for side in ("base", "adapted"):
        gen = result[side]["generation"]
        assert gen["examples"] == 3 and gen["tool_examples"] == 1
        assert gen["generated_tokens"] <= 15
        assert result[side]["loss"]["split"] == "test"
    assert set(result["delta"]) >= {"loss", "perplexity", "exact_match", "tool_name_accuracy"}
    folder = run_dir / "eval"
    assert json.loads((folder / "results.json").read_text())["sampling"]["seed"] == 4
    lines = [json.loads(x) for x in (folder / "examples.jsonl").read_text().splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 3]
    assert lines[0]["reference_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert lines[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert {"output", "exact_match", "tool_name"} <= set(lines[0]["adapted"])

    table = _cli("--model", tiny_llama, "--adapter", run_dir, "--data", prepared, "--out", folder)
    assert table.returncode == 0, table.stderr
    assert "test loss" in table.stdout and "delta" in table.stdout
    # This evaluation generated nothing: no stale examples next to its results.
    assert not (folder / "examples.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--top-p", "0"], 2, "top_p = 0.0"),
        (["--max-tokens", "0"], 2, "max_tokens = 0"),
        (["--adapter", "nowhere"], 2, "nowhere: no adapters.safetensors"),
    ],
)
def test_cli_exit_codes(
    tiny_llama: Path, heldout: Path, args: list[str], code: int, message: str
) -> None:
    out = _cli("--model", tiny_llama, "--data", heldout, *args)
    assert out.returncode == code
    assert message in out.stderr and out.stdout == ""


def test_cli_bad_records_fail_with_the_line(tiny_llama: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    out = _cli("--model", tiny_llama, "--data", bad)
    assert out.returncode == 1 and "bad.jsonl:1" in out.stderr


def test_batched_generation_with_a_shared_prefix_is_mlx_lm_generation(tiny_llama: Path) -> None:
    from mlx_lm import generate as mlx_generate

    from ftx.evaluation import generation

    model, tokenizer, _ = generation.load(tiny_llama)
    system = {"role": "system", "content": "You call tools. Answer with JSON only, please."}
    questions = ("Weather in Paris?", "Set a timer for 5 minutes", "Hi")
    encoded = generation.prompt_tokens(
        tiny_llama, [([system, {"role": "user", "content": q}], None) for q in questions]
    )
    prompts = [p for p in encoded if isinstance(p, list)]
    assert len(prompts) == len(questions)
    # the one renderer gives what transformers' apply_chat_template gives for these prompts
    for q, p in zip(questions, prompts, strict=True):
        messages = [system, {"role": "user", "content": q}]
        assert p == tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert generation.shared_prefix(prompts) > 10
    ours = generation.generate(
        model, tokenizer, prompts, temperature=0.0, top_p=1.0, max_tokens=10, seed=0
    )
    for prompt, got in zip(prompts, ours, strict=True):
        assert got.text == mlx_generate(model, tokenizer, prompt, max_tokens=10)


def test_shared_prefix_leaves_a_token_to_prefill() -> None:
    from ftx.evaluation.generation import shared_prefix

    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix([[7, 8]]) == 1
    assert shared_prefix([[1], [2]]) == 0


def test_the_adapted_loss_is_the_test_loss_ftx_train_reports(
    tiny_llama: Path, prepared: Path, make_config: Any
) -> None:
    import ftx

    report = ftx.train(make_config(iters=3, learning_rate=1e-2))
    r = evaluate(tiny_llama, adapter=report.run_dir, data=prepared)
    assert r.adapted is not None and r.adapted.loss is not None and r.base.loss is not None
    assert report.test_loss is not None
    assert r.adapted.loss.loss == pytest.approx(report.test_loss, rel=1e-5)
    assert r.adapted.loss.loss != pytest.approx(r.base.loss.loss, rel=1e-4)
    assert (report.run_dir / "eval" / "results.json").is_file()


def test_a_prompt_the_template_cannot_render_names_the_line(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from ftx import DataError

    # A template that refuses system turns, as Gemma's does: the record with one is named.
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    record = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ]
    }
    path = _jsonl(tmp_path / "h.jsonl", [RECORDS[1], record])
    with pytest.raises(DataError, match=r"h\.jsonl:2: the chat template .* cannot render.*System"):
        evaluate(model, data=path)

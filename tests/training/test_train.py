"""``ftx train`` end to end: real ``ftx prepare`` output in, an adapter mlx-lm loads out."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_models import shard

from ftx.errors import ConfigIssues
from ftx.training.metrics import KEYS, read_metrics

pytestmark = pytest.mark.mlx

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chat_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    import ftx

    out = tmp_path_factory.mktemp("chat") / "prepared"
    ftx.prepare(
        REPO / "examples" / "data" / "chat.jsonl",
        out=out,
        model=tiny_llama,
        valid=0.1,
        test=0.1,
        max_reject_ratio=0.05,
    )
    return out


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", "train", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_trains_on_a_prepared_artifact_and_mlx_lm_loads_the_adapter(
    tiny_llama: Path, chat_artifact: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    done = run_cli(
        *("--model", tiny_llama, "--data", chat_artifact, "--out", out),
        *("--iters", "6", "--batch-size", "2", "--max-seq-length", "128"),
        *("--eval-every", "3", "--report-every", "2", "--learning-rate", "1e-3", "--json"),
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["steps"] == 6
    assert summary["val_loss"] is not None and summary["test_loss"] is not None
    # which BLAS and where it came from: on Linux the PyPI OpenBLAS that ftx[train] brings
    assert "PyPI scipy-openblas32" in summary["blas"] or summary["blas"].startswith("accelerate")
    assert summary["stop_reason"] == "completed 6 steps"
    assert 0 < summary["packing_efficiency"] <= 1
    assert summary["trained_tokens"] < summary["processed_tokens"] <= summary["computed_tokens"]

    steps = [r for r in read_metrics(out / "metrics.jsonl") if "event" not in r]
    assert [r["step"] for r in steps] == [2, 3, 4, 6]
    for r in steps:
        assert set(r) == set(KEYS)
        assert r["learning_rate"] > 0 and r["grad_norm"] > 0 and r["peak_memory"] > 0
    assert [r["step"] for r in steps if r["val_loss"] is not None] == [3, 6]
    assert all(r["trained_tokens_per_s"] > 0 for r in steps if r["train_loss"] is not None)

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora"
    assert (out / "config.yaml").is_file()
    assert json.loads((out / "manifest.json").read_text())["report"]["steps"] == 6

    import mlx.core as mx
    from mlx_lm import generate, load

    model, tokenizer = load(str(tiny_llama), adapter_path=str(out))
    trained = mx.load(str(out / "adapters.safetensors"))
    loaded = dict(__import__("mlx.utils").utils.tree_flatten(model.trainable_parameters()))
    name = next(iter(trained))
    assert mx.array_equal(loaded[name], trained[name])
    text = generate(model, tokenizer, "hello", max_tokens=4)
    assert isinstance(text, str)


def test_refuses_data_prepared_with_another_tokenizer(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path, tiny_llama: Path
) -> None:
    import shutil

    from ftx import train

    other = tmp_path / "other-model"
    shutil.copytree(tiny_llama, other)
    tok = json.loads((other / "tokenizer.json").read_text())
    tok["added_tokens"][0]["content"] += "x"
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ConfigIssues) as e:
        train(make_config(model=other))
    assert "another tokenizer" in str(e.value) and "prepare it again" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_broken_models_and_out_of_vocabulary_data_are_refused_before_loading(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path, tiny_llama: Path, prepared: Path
) -> None:
    import shutil

    from ftx import train

    def broken(name: str, edit: Callable[[Path], None]) -> Path:
        folder = tmp_path / name
        shutil.copytree(tiny_llama, folder)
        edit(folder)
        return folder

    def cut(folder: Path) -> None:
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[:-100])

    def smaller_embedding(folder: Path) -> None:
        # the tokenizer's ids reach beyond the rows of this embedding
        config = json.loads((folder / "config.json").read_text())
        config["vocab_size"] = 8
        (folder / "config.json").write_text(json.dumps(config))
        shutil.copy(tiny_llama / "model.safetensors", folder / "model.safetensors")
        import mlx.core as mx

        weights = mx.load(str(folder / "model.safetensors"))
        weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"][:8]
        weights.pop("lm_head.weight", None)
        mx.save_safetensors(str(folder / "model.safetensors"), weights)

    def other_vocab_size(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))

    def lost_shard(folder: Path) -> None:
        shard(folder)
        (folder / "model-00002-of-00002.safetensors").unlink()

    rows = json.loads((tiny_llama / "config.json").read_text())["vocab_size"]
    cases = {
        "cut": (cut, "cut off or damaged"),
        "config": (lambda f: (f / "config.json").write_text("[1, 2]"), "a JSON object"),
        "embedding": (
            smaller_embedding,
            f"tokenizer.json: has token ids up to {rows - 1}, but the embedding "
            "model.embed_tokens.weight in model.safetensors has 8 rows: the tokenizer is not "
            "this model's",
        ),
        "vocab_size": (
            other_vocab_size,
            f"config.json: vocab_size is 1000, but the embedding model.embed_tokens.weight in "
            f"model.safetensors has {rows} rows: config.json and the weights are of different "
            "models",
        ),
        "shard": (
            lost_shard,
            "model.safetensors.index.json: names 2 shards, but "
            "model-00002-of-00002.safetensors is not in",
        ),
    }
    for name, (edit, message) in cases.items():
        with pytest.raises(ConfigIssues) as e:
            train(make_config(model=broken(name, edit)))
        assert message in str(e.value), str(e.value)
    assert not (tmp_path / "run").exists()


def test_rows_longer_than_the_models_positions_are_refused_before_loading(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path, tiny_llama: Path
) -> None:
    import shutil

    from ftx import train

    limit = json.loads((tiny_llama / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(ConfigIssues) as e:
        train(make_config(max_seq_length=limit + 1))
    assert f"max_seq_length = {limit + 1}" in str(e.value)
    assert f"at most {limit}, the model's max_position_embeddings" in str(e.value)
    assert not (tmp_path / "run").exists()
    # Multimodal configs nest the language model's limit.
    nested = tmp_path / "nested"
    shutil.copytree(tiny_llama, nested)
    config = json.loads((nested / "config.json").read_text())
    config["text_config"] = {"max_position_embeddings": config.pop("max_position_embeddings")}
    (nested / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigIssues, match="at most"):
        train(make_config(model=nested, max_seq_length=limit * 2), dry_run=True)
    # The limit itself is allowed.
    report = train(make_config(max_seq_length=limit), dry_run=True)
    assert report.dry_run


def test_a_gzipped_tokenizer_hashes_like_the_plain_one(tmp_path: Path, tiny_llama: Path) -> None:
    import gzip

    from ftx.data import model_tokenizer_sha256

    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "tokenizer.json.gz").write_bytes(
        gzip.compress((tiny_llama / "tokenizer.json").read_bytes())
    )
    assert model_tokenizer_sha256(packed) == model_tokenizer_sha256(tiny_llama) is not None
    assert model_tokenizer_sha256(tmp_path) is None


def test_a_sharded_model_trains_as_the_same_model_in_one_file(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path, tiny_llama: Path
) -> None:
    import shutil

    from ftx import train

    sharded = shard(shutil.copytree(tiny_llama, tmp_path / "sharded"))
    assert sorted(p.name for p in sharded.glob("model*")) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    train(make_config(out=tmp_path / "one"))
    train(make_config(model=sharded, out=tmp_path / "two"))

    def losses(run: Path) -> list[float]:
        return [r["train_loss"] for r in read_metrics(run / "metrics.jsonl") if r.get("train_loss")]

    assert losses(tmp_path / "two") == losses(tmp_path / "one") != []


def test_dry_run_loads_no_weights_and_writes_nothing(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    from ftx import train

    r = train(make_config(), dry_run=True)
    assert r.dry_run and r.trainable_parameters > 0 and r.total_parameters > r.trainable_parameters
    assert r.memory.total > r.memory.weights > 0
    assert not (tmp_path / "run").exists()


def test_epochs_set_the_number_of_steps(make_config: Callable[..., dict[str, Any]]) -> None:
    from ftx import train

    r = train(make_config(iters=None, epochs=2, batch_size=8, save_every=None))
    assert r.epochs == 2.0
    assert r.steps % 2 == 0 and r.steps > 2

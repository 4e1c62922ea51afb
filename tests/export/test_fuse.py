"""``ftx fuse``: merged models equal base + adapter, quantization entries are never stale, errors
are measured, and the GGUF / PEFT exports compute the same model.

Adapters are made with mlx-lm itself (``linear_to_lora_layers`` on a tiny model, ``lora_b`` and
DoRA's ``m`` perturbed so the adapter changes the model), in mlx-lm's file layout, so these
tests do not depend on ``ftx train``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import TOKENIZER, build_model, gguf_as_mlx

from ftx.errors import ConfigError
from ftx.export import PROVENANCE, FuseOptions, fuse

pytestmark = pytest.mark.mlx

KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"]
RANK = 4
SCALE = 8.0
PROMPT = [5, 17, 42, 99, 3, 250, 7, 64, 128, 31, 11, 2]
# float32 base: fused and unfused differ by float32 rounding of the same products.
FLOAT32_TOLERANCE = 1e-5


def make_adapter(
    folder: Path, base: Path, kind: str = "lora", num_layers: int = 2, seed: int = 1
) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    model, _ = load_model(base)
    model.freeze()
    params = {"rank": RANK, "scale": SCALE, "dropout": 0.0, "keys": KEYS}
    mx.random.seed(seed)
    linear_to_lora_layers(model, num_layers, params, use_dora=kind == "dora")
    weights = {}
    for name, v in tree_flatten(model.trainable_parameters()):
        if name.endswith("lora_b"):
            v = mx.random.normal(v.shape) * 0.05
        elif name.endswith(".m"):
            v = v * (1.0 + 0.2 * mx.random.uniform(shape=v.shape))
        weights[name] = v
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    meta = {"fine_tune_type": kind, "num_layers": num_layers, "lora_parameters": params}
    (folder / "adapter_config.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def logits(model_dir: Path, adapter: Path | None = None) -> np.ndarray:
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(model_dir), adapter_path=str(adapter) if adapter else None)
    return np.array(model(mx.array([PROMPT])).astype(mx.float32))


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def quantized_layers(model_dir: Path) -> list[str]:
    import mlx.nn as nn
    from mlx_lm.utils import load_model

    model, _ = load_model(model_dir)
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.QuantizedLinear | nn.QuantizedEmbedding)
    ]


def config_of(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return config


@pytest.fixture(scope="module")
def q4_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("q4") / "llama4", bits=4)


RUN_MANIFEST = {"format": "ftx-run", "started": "2026-01-01T00:00:00+00:00", "inputs": {}}


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    run = make_adapter(tmp_path_factory.mktemp("adapters") / "lora", tiny_llama)
    (run / "manifest.json").write_text(json.dumps(RUN_MANIFEST), encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, lora: Path) -> Path:
    out = tmp_path_factory.mktemp("fused") / "lora"
    fuse(tiny_llama, lora, out)
    return out


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_fused_logits_equal_base_plus_adapter(tiny_llama: Path, tmp_path: Path, kind: str) -> None:
    adapter = make_adapter(tmp_path / "run", tiny_llama, kind, num_layers=1)
    report = fuse(tiny_llama, adapter, tmp_path / "fused")
    assert report.fused_layers == len(KEYS)
    expected = logits(tiny_llama, adapter)
    assert max_diff(expected, logits(tiny_llama)) > 1e-2  # the adapter does change the model
    assert max_diff(logits(tmp_path / "fused"), expected) < FLOAT32_TOLERANCE
    assert quantized_layers(tmp_path / "fused") == []


def test_provenance_and_atomic_write(tiny_llama: Path, lora: Path, fused: Path) -> None:
    from ftx.files import sha256_file

    prov = json.loads((fused / PROVENANCE).read_text(encoding="utf-8"))
    assert prov["base"]["path"] == str(tiny_llama.resolve())
    assert prov["base"]["weights_sha256"] == {
        "model.safetensors": sha256_file(tiny_llama / "model.safetensors")
    }
    assert prov["adapter"]["weights_sha256"] == {
        "adapters.safetensors": sha256_file(lora / "adapters.safetensors")
    }
    assert prov["adapter"]["adapter_config"]["lora_parameters"]["rank"] == RANK
    assert prov["run"] == RUN_MANIFEST
    assert prov["options"]["format"] == "mlx"
    assert prov["report"]["fused_layers"] == 2 * len(KEYS)
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors", "config.json"):
        assert (fused / name).is_file()
    assert [p.name for p in fused.parent.iterdir()] == [fused.name]  # no staging folder left
    assert fused.stat().st_mode & 0o055 == 0o055  # not the staging folder's private mode


def test_full_fine_tune_is_loaded_as_is(tiny_llama: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    weights = mx.load(str(tiny_llama / "model.safetensors"))
    trained = {k: v * 1.1 for k, v in weights.items() if k.startswith("model.layers.1.")}
    (tmp_path / "run").mkdir()
    mx.save_safetensors(str(tmp_path / "run" / "adapters.safetensors"), trained)
    meta = {"fine_tune_type": "full", "num_layers": 1}
    (tmp_path / "run" / "adapter_config.json").write_text(json.dumps(meta), encoding="utf-8")
    report = fuse(tiny_llama, tmp_path / "run", tmp_path / "out")
    assert report.fused_layers == 0 and report.fine_tune_type == "full"
    assert max_diff(logits(tmp_path / "out"), logits(tiny_llama, tmp_path / "run")) < 1e-6
    with pytest.raises(ConfigError, match="full fine-tune has no adapter"):
        fuse(tiny_llama, tmp_path / "run", tmp_path / "peft", FuseOptions(format="peft"))


def test_data_must_match_the_tokenizer(
    tiny_llama: Path, lora: Path, prepared: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    manifest = json.loads((other / "manifest.json").read_text(encoding="utf-8"))
    manifest["tokenizer"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ConfigError, match="another tokenizer"):
        fuse(tiny_llama, lora, tmp_path / "out", FuseOptions(data=other))
    with pytest.raises(ConfigError, match="split = nope"):
        fuse(tiny_llama, lora, tmp_path / "out", FuseOptions(data=prepared, split="nope"))
    assert not (tmp_path / "out").exists()


def test_failed_fuse_leaves_nothing(tmp_path: Path) -> None:
    base = build_model(tmp_path / "spm")
    tok = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    tok["decoder"] = {"type": "Metaspace", "replacement": "\u2581"}
    (base / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    adapter = make_adapter(tmp_path / "run", base)
    # The tokenizer is refused while the GGUF is being written, inside the staging folder.
    with pytest.raises(ConfigError, match="neither a byte-level BPE nor a SentencePiece BPE"):
        fuse(base, adapter, tmp_path / "out" / "gguf", FuseOptions(format="gguf"))
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not a new or empty folder"):
        fuse(base, adapter, tmp_path / "taken")
    assert (tmp_path / "taken" / "x").read_text() == "x"
    fuse(base, adapter, tmp_path / "taken", FuseOptions(force=True))
    assert not (tmp_path / "taken" / "x").exists()
    assert (tmp_path / "taken" / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging, no old


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_dequantize_leaves_no_quantization(q4_base: Path, tmp_path: Path, dtype: str) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load_model

    adapter = make_adapter(tmp_path / "run", q4_base)
    report = fuse(q4_base, adapter, tmp_path / "out", FuseOptions(dequantize=True, dtype=dtype))
    config = config_of(tmp_path / "out")
    assert "quantization" not in config and "quantization_config" not in config
    assert quantized_layers(tmp_path / "out") == []
    model, _ = load_model(tmp_path / "out")
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == getattr(mx, dtype)
    assert report.output_quantization == "float" and report.layer_errors == []
    # Dequantizing is lossless: the float model computes what the QLoRA model computed.
    tolerance = {"float32": FLOAT32_TOLERANCE, "float16": 5e-3, "bfloat16": 3e-2}[dtype]
    assert max_diff(logits(tmp_path / "out"), logits(q4_base, adapter)) < tolerance


def test_quantized_base_is_written_in_float_by_default(q4_base: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "run", q4_base, num_layers=1)
    report = fuse(q4_base, adapter, tmp_path / "out")
    config = config_of(tmp_path / "out")
    assert "quantization" not in config and "quantization_config" not in config
    assert quantized_layers(tmp_path / "out") == [] and report.layer_errors == []
    assert any("written in float32, without loss" in w for w in report.warnings)
    assert max_diff(logits(tmp_path / "out"), logits(q4_base, adapter)) < FLOAT32_TOLERANCE


def test_requantizing_a_quantized_base_keeps_its_setting(q4_base: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    adapter = make_adapter(tmp_path / "run", q4_base, num_layers=1)
    report = fuse(q4_base, adapter, tmp_path / "out", FuseOptions(quantize=4))
    config = config_of(tmp_path / "out")
    assert config["quantization"] == {"group_size": 64, "bits": 4, "mode": "affine"}
    assert config["quantization_config"] == config["quantization"]
    assert len(quantized_layers(tmp_path / "out")) == len(quantized_layers(q4_base))
    merged = {e.name: e for e in report.layer_errors if e.delta_relative_error is not None}
    assert sorted(merged) == sorted(f"model.layers.1.{k}" for k in KEYS)
    assert all(0.0 < e.relative_error < 0.2 and e.bits == 4 for e in merged.values())
    # The others are rounded back onto their base codes: no error at all.
    others = [e for e in report.layer_errors if e.name not in merged]
    assert others and all(e.relative_error == 0.0 and e.base_grid for e in others)
    # Layers the adapter did not touch keep their stored weights bit for bit.
    before = mx.load(str(q4_base / "model.safetensors"))
    after = mx.load(str(tmp_path / "out" / "model.safetensors"))
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.scales"):
        assert mx.array_equal(before[name], after[name])
    assert not mx.array_equal(
        before["model.layers.1.self_attn.q_proj.weight"],
        after["model.layers.1.self_attn.q_proj.weight"],
    )


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_base_grid_rounding_packs_like_mlx_and_bounds_the_error(bits: int) -> None:
    import mlx.core as mx
    import mlx.nn as nn

    from ftx.export.merge import Grid, QuantSpec
    from ftx.export.quantization import on_base_grid

    mx.random.seed(bits)
    base = nn.Linear(128, 16, bias=False).to_quantized(group_size=32, bits=bits)
    spec = QuantSpec(32, bits)
    w = mx.dequantize(base.weight, base.scales, base.biases, 32, bits)
    unchanged = nn.Linear(128, 16, bias=False)
    unchanged.weight = w
    # Nothing merged: the codes come back exactly, packed as MLX packs them.
    same = on_base_grid(unchanged, Grid(spec, base.scales, base.biases))
    assert mx.array_equal(same.weight, base.weight)
    moved = nn.Linear(128, 16, bias=False)
    delta = mx.random.normal(w.shape) * 0.01
    moved.weight = w + delta
    q = on_base_grid(moved, Grid(spec, base.scales, base.biases))
    err = mx.dequantize(q.weight, q.scales, q.biases, 32, bits) - moved.weight
    # Never further from the merged weight than the base's own code.
    assert bool((mx.abs(err) <= mx.abs(delta) + 1e-6).all())


def test_small_adapter_keeps_the_base_grid(q4_base: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    adapter = make_adapter(tmp_path / "run", q4_base)
    weights = mx.load(str(adapter / "adapters.safetensors"))
    small = {k: v * 0.01 if k.endswith("lora_b") else v for k, v in weights.items()}
    mx.save_safetensors(str(adapter / "adapters.safetensors"), small)
    report = fuse(q4_base, adapter, tmp_path / "out", FuseOptions(quantize=4))
    assert report.layer_errors and all(e.base_grid for e in report.layer_errors)
    assert all((e.delta_relative_error or 0) <= 1.0 for e in report.layer_errors)
    before = mx.load(str(q4_base / "model.safetensors"))
    after = mx.load(str(tmp_path / "out" / "model.safetensors"))
    name = "model.layers.1.self_attn.q_proj"
    assert mx.array_equal(before[f"{name}.scales"], after[f"{name}.scales"])
    assert max_diff(logits(tmp_path / "out"), logits(q4_base, adapter)) < 0.05


def test_quantize_reports_weight_error_and_perplexity(
    tiny_llama: Path, lora: Path, prepared: Path, tmp_path: Path
) -> None:
    reports = {}
    for bits in (8, 4):
        out = tmp_path / f"q{bits}"
        reports[bits] = fuse(tiny_llama, lora, out, FuseOptions(quantize=bits, data=prepared))
        assert config_of(out)["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
        assert quantized_layers(out)
    q8, q4 = reports[8], reports[4]
    # Every linear layer and the embedding: 7 per block, embedding, head.
    assert len(q8.layer_errors) == 2 * 7 + 2
    assert q8.max_relative_error is not None and q8.max_relative_error < 0.01
    assert q4.max_relative_error is not None and q4.max_relative_error > 5 * q8.max_relative_error
    for r in (q8, q4):
        assert r.float_loss is not None and r.quantized_loss is not None
        assert r.float_loss.tokens == r.quantized_loss.tokens > 0
        assert r.perplexity_change is not None
    assert q8.float_loss.loss == pytest.approx(q4.float_loss.loss)  # type: ignore[union-attr]
    assert abs(q8.perplexity_change) < abs(q4.perplexity_change)  # type: ignore[arg-type]
    prov = json.loads((tmp_path / "q4" / PROVENANCE).read_text(encoding="utf-8"))
    assert prov["report"]["perplexity_change"] == pytest.approx(q4.perplexity_change)


def test_cpu_evaluation_through_the_float32_twin_is_the_quantized_model(
    q4_base: Path, prepared: Path
) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load_model

    from ftx.export.perplexity import float32_twin, split_loss

    model, _ = load_model(q4_base)
    twin = float32_twin(model)
    assert not [n for n, m in twin.named_modules() if hasattr(m, "bits")]
    x = mx.array([PROMPT])
    assert max_diff(np.array(twin(x)), np.array(model(x).astype(mx.float32))) < 1e-4
    direct = split_loss(model, prepared, "test", 64)
    assert split_loss(twin, prepared, "test", 64).loss == pytest.approx(direct.loss, rel=1e-5)


def test_warnings_above_thresholds() -> None:
    from ftx.export.quantization import LayerError, warnings_for

    ok = LayerError("a", (8, 8), 8, 64, 0.01, 0.1)
    assert warnings_for([ok], 0.001) == []
    bad = LayerError("b", (8, 8), 4, 64, 0.3, 2.0)
    found = warnings_for([ok, bad], 0.2)
    assert len(found) == 3
    assert "worst b: 30.0%" in found[0] and "1 of 2 merged" in found[1] and "20.0%" in found[2]


def test_fused_model_and_adapter_load_and_generate(
    tiny_llama: Path, lora: Path, fused: Path
) -> None:
    from mlx_lm import generate, load

    texts = []
    for model_dir, adapter in ((fused, None), (tiny_llama, lora)):
        model, tokenizer = load(str(model_dir), adapter_path=str(adapter) if adapter else None)
        texts.append(generate(model, tokenizer, PROMPT, max_tokens=8))
    assert texts[0] and texts[0] == texts[1]


# --- PEFT ---------------------------------------------------------------------------------


def test_peft_names_shapes_and_weights(
    tiny_llama: Path, lora: Path, fused: Path, tmp_path: Path
) -> None:
    import mlx.core as mx

    fuse(tiny_llama, lora, tmp_path / "peft", FuseOptions(format="peft"))
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == "LORA" and config["r"] == RANK
    assert config["lora_alpha"] == SCALE * RANK and config["lora_dropout"] == 0.0
    assert config["target_modules"] == sorted(KEYS)
    assert config["base_model_name_or_path"] == str(tiny_llama.resolve())
    assert config["use_dora"] is False and config["use_rslora"] is False
    assert config["layers_to_transform"] is None
    tensors = mx.load(str(tmp_path / "peft" / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 2 * len(KEYS)
    base = mx.load(str(tiny_llama / "model.safetensors"))
    merged = mx.load(str(fused / "model.safetensors"))
    scaling = config["lora_alpha"] / config["r"]
    for layer in range(2):
        for key in KEYS:
            module = f"model.layers.{layer}.{key}"
            a = tensors[f"base_model.model.{module}.lora_A.weight"]
            b = tensors[f"base_model.model.{module}.lora_B.weight"]
            w = base[f"{module}.weight"]
            assert a.shape == (RANK, w.shape[1]) and b.shape == (w.shape[0], RANK)
            assert mx.allclose(w + scaling * (b @ a), merged[f"{module}.weight"], atol=1e-6)


def test_peft_of_a_qlora_adapter_notes_the_quantized_base(q4_base: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "run", q4_base)
    report = fuse(q4_base, adapter, tmp_path / "peft", FuseOptions(format="peft"))
    assert report.dtype == "float32"
    assert any("trained on a quantized base (4-bit, group 64" in w for w in report.warnings)


def test_peft_dora_and_partial_layers(tiny_llama: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    adapter = make_adapter(tmp_path / "run", tiny_llama, "dora", num_layers=1)
    fuse(tiny_llama, adapter, tmp_path / "fused")
    fuse(tiny_llama, adapter, tmp_path / "peft", FuseOptions(format="peft"))
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["use_dora"] is True
    assert config["layers_to_transform"] == [1] and config["layers_pattern"] == "layers"
    tensors = mx.load(str(tmp_path / "peft" / "adapter_model.safetensors"))
    base = mx.load(str(tiny_llama / "model.safetensors"))
    merged = mx.load(str(tmp_path / "fused" / "model.safetensors"))
    scaling = config["lora_alpha"] / config["r"]
    for key in KEYS:
        module = f"model.layers.1.{key}"
        prefix = f"base_model.model.{module}"
        w = base[f"{module}.weight"] + scaling * (
            tensors[f"{prefix}.lora_B.weight"] @ tensors[f"{prefix}.lora_A.weight"]
        )
        # PEFT's DoRA: magnitude over the row norms of the merged weight.
        m = tensors[f"{prefix}.lora_magnitude_vector"]
        expected = (m / mx.linalg.norm(w, axis=1))[:, None] * w
        assert mx.allclose(expected, merged[f"{module}.weight"], atol=1e-5)


# --- GGUF ---------------------------------------------------------------------------------


def test_qk_permutation_is_llama_cpps() -> None:
    from ftx.gguf.names import permute_qk, unpermute_qk

    heads, head_dim = 2, 8
    w = np.arange(heads * head_dim * 3, dtype=np.float32).reshape(heads * head_dim, 3)
    p = permute_qk(w, heads)
    for h in range(heads):
        for i in range(head_dim // 2):
            # llama.cpp interleaves the two halves of each head: pairs (i, i + head_dim / 2).
            assert (p[h * head_dim + 2 * i] == w[h * head_dim + i]).all()
            assert (p[h * head_dim + 2 * i + 1] == w[h * head_dim + head_dim // 2 + i]).all()
    assert (unpermute_qk(p, heads) == w).all()


def gguf_logits(path: Path, base: Path) -> np.ndarray:
    import mlx.core as mx
    from mlx_lm.utils import load_model

    model, _ = load_model(base)
    model.load_weights(list(gguf_as_mlx(path, base).items()))
    return np.array(model(mx.array([PROMPT])).astype(mx.float32))


def test_gguf_of_tied_embeddings_has_no_output_tensor(tmp_path: Path) -> None:
    import gguf

    base = build_model(tmp_path / "tied", tie_word_embeddings=True)
    adapter = make_adapter(tmp_path / "run", base)
    fuse(base, adapter, tmp_path / "fused")
    fuse(base, adapter, tmp_path / "g", FuseOptions(format="gguf", dtype="float32"))
    path = tmp_path / "g" / "model-f32.gguf"
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}
    assert max_diff(gguf_logits(path, base), logits(tmp_path / "fused")) < FLOAT32_TOLERANCE


@pytest.mark.parametrize(("arch", "extra"), [("qwen2", "attn_q.bias"), ("qwen3", "attn_q_norm")])
def test_gguf_of_qwen(tmp_path: Path, arch: str, extra: str) -> None:
    import gguf

    base = build_model(tmp_path / arch, arch=arch)
    adapter = make_adapter(tmp_path / "run", base)
    fuse(base, adapter, tmp_path / "fused")
    fuse(base, adapter, tmp_path / "g", FuseOptions(format="gguf", dtype="float32"))
    path = tmp_path / "g" / "model-f32.gguf"
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == arch
    assert int(reader.fields[f"{arch}.attention.head_count_kv"].contents()) == 2
    assert f"blk.0.{extra}.weight" in {t.name for t in reader.tensors} or (
        f"blk.0.{extra}" in {t.name for t in reader.tensors}
    )
    assert max_diff(gguf_logits(path, base), logits(tmp_path / "fused")) < FLOAT32_TOLERANCE


def test_llama3_rope_scaling_becomes_rope_freqs(tmp_path: Path) -> None:
    import gguf
    import mlx.core as mx
    from mlx_lm.models.rope_utils import Llama3RoPE

    scaling = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    base = build_model(tmp_path / "l3", rope_scaling=scaling, rope_theta=500000.0)
    adapter = make_adapter(tmp_path / "run", base)
    fuse(base, adapter, tmp_path / "g", FuseOptions(format="gguf"))
    tensors = {t.name: t for t in gguf.GGUFReader(tmp_path / "g" / "model-f16.gguf").tensors}
    got = np.array(tensors["rope_freqs.weight"].data)
    rope = Llama3RoPE(16, 2048, False, 500000.0, scaling)
    periods = np.array(500000.0 ** (mx.arange(0, 16, 2) / 16))
    expected = np.array(rope._freqs) / periods
    # The three bands: unscaled, smoothed, scaled by the factor.
    assert expected.min() == pytest.approx(1.0) and expected.max() == pytest.approx(32.0)
    assert ((expected > 1.01) & (expected < 31.9)).any()
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_pre_tokenizer_names_of_real_tokenizers(shared: Path) -> None:
    import gzip

    from ftx.gguf.write import pre_tokenizer

    def name(path: Path) -> str:
        return pre_tokenizer(json.loads(gzip.decompress(path.read_bytes())))

    assert name(shared / "tokenizers" / "llama3" / "tokenizer.json.gz") == "llama-bpe"
    assert name(shared / "tokenizers" / "qwen3" / "tokenizer.json.gz") == "qwen2"
    tiny = json.loads((TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))
    assert pre_tokenizer(tiny) == "gpt-2"


@pytest.mark.parametrize(("quantize", "tolerance"), [(None, 2e-3), (8, 3e-2)])
def test_gguf_reads_back_to_the_same_logits(
    tiny_llama: Path,
    lora: Path,
    fused: Path,
    tmp_path: Path,
    quantize: int | None,
    tolerance: float,
) -> None:
    import gguf
    import mlx.core as mx

    report = fuse(tiny_llama, lora, tmp_path / "g", FuseOptions(format="gguf", quantize=quantize))
    kind = "q8_0" if quantize else "f16"
    path = tmp_path / "g" / f"model-{kind}.gguf"
    assert report.files == [path.name, PROVENANCE]
    config = config_of(tiny_llama)

    _, meta = mx.load(str(path), return_metadata=True)
    tok = json.loads((tiny_llama / "tokenizer.json").read_text(encoding="utf-8"))
    tok_config = json.loads((tiny_llama / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert len(meta["tokenizer.ggml.tokens"]) == config["vocab_size"]
    assert meta["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(meta["tokenizer.ggml.merges"]) == len(tok["model"]["merges"])
    assert meta["tokenizer.chat_template"] == tok_config["chat_template"]
    assert int(meta["tokenizer.ggml.eos_token_id"].item()) == 2

    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == kind.upper()
    assert int(reader.fields["llama.attention.head_count_kv"].contents()) == 2
    assert reader.fields["general.file_type"].contents() == (7 if quantize else 1)

    assert max_diff(gguf_logits(path, tiny_llama), logits(fused)) < tolerance
    if quantize:
        assert report.max_relative_error is not None and 0 < report.max_relative_error < 0.01


# --- CLI ----------------------------------------------------------------------------------


def test_cli_fuse_json_and_errors(tiny_llama: Path, lora: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ftx.cli import cli

    args = ["fuse", "--model", str(tiny_llama), "--adapter", str(lora)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fused_layers"] == 2 * len(KEYS) and report["format"] == "mlx"
    both = [*args, "--out", str(tmp_path / "p"), "--dequantize", "--quantize", "4"]
    result = CliRunner().invoke(cli, both)
    assert result.exit_code == 2 and "choose one" in result.stderr
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a new or empty folder" in result.stderr


def test_cli_fuse_takes_a_config_file_and_names_its_problems(
    tiny_llama: Path, lora: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from ftx.cli import cli

    config = tmp_path / "fuse.yaml"
    config.write_text(f"model: {tiny_llama}\nadapter: {lora}\nout: {tmp_path / 'o'}\n")
    result = CliRunner().invoke(cli, ["fuse", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["format"] == "mlx"
    # A flag overrides the file.
    result = CliRunner().invoke(
        cli, ["fuse", "--config", str(config), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p").is_dir()
    config.write_text(f"model: {tiny_llama}\nquantise: 4\nformat: onnx\ngroup_size: big\n")
    result = CliRunner().invoke(cli, ["fuse", "--config", str(config)])
    assert result.exit_code == 2 and "3 configuration problem(s)" in result.stderr
    assert "did you mean 'quantize'" in result.stderr
    assert "format = 'onnx'" in result.stderr and "group_size = 'big'" in result.stderr


def test_fuse_help_does_not_import_mlx() -> None:
    code = (
        "from ftx.cli import main\ntry:\n    main(['fuse', '--help'])\nexcept SystemExit:\n    pass"
    )
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    assert "--dequantize" in out.stdout
    mods = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not {m for m in mods if m == "mlx" or m.startswith(("mlx.", "mlx_lm"))}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (FuseOptions(group_size=32), "only used with quantize"),
        (FuseOptions(format="gguf", quantize=8, group_size=32), "fixed blocks of 32"),
        (FuseOptions(format="gguf", quantize=4), "Q8_0"),
        (FuseOptions(format="peft", dtype="float16"), "as trained"),
        (FuseOptions(quantize=3), "one of"),
    ],
)
def test_options_are_checked_before_anything_loads(
    options: FuseOptions, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        fuse(tmp_path / "no-model", tmp_path / "no-run", tmp_path / "out", options)

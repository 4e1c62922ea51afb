"""``ftx.convert`` on tiny llama GGUF files written as llama.cpp writes them.

The reference is the same model built by mlx-lm straight from the Hugging Face-layout weights:
the converted folder must give the same logits, for every tensor type.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from convert_support import TINY

import ftx

pytestmark = pytest.mark.mlx
mx = pytest.importorskip("mlx.core")
mlx_lm_utils = pytest.importorskip("mlx_lm.utils")
gguf = pytest.importorskip("gguf")

PROMPT = [5, 70, 256, 257, 13, 99, 200, 3]


def _logits(model: Any) -> np.ndarray:
    out = model(mx.array([PROMPT]))
    return np.array(out.astype(mx.float32))[0]


def _reference(weights: dict[str, np.ndarray], config: dict[str, Any]) -> np.ndarray:
    from mlx_lm.models import llama

    cfg = {k: v for k, v in config.items() if not k.startswith("quantization")}
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    names = {k for k, _ in _flat(model.parameters())}
    model.load_weights([(k, mx.array(v)) for k, v in weights.items() if k in names])
    return _logits(model)


def _flat(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _flat(v, f"{prefix}{k}.")]
    if isinstance(tree, list):
        return [kv for i, v in enumerate(tree) for kv in _flat(v, f"{prefix}{i}.")]
    return [(prefix[:-1], tree)]


def _roundtrip(weights: dict[str, np.ndarray], qtype: str) -> dict[str, np.ndarray]:
    """The weights as the GGUF file holds them: quantized and back, matrices only."""
    t = gguf.GGMLQuantizationType[qtype]
    out = {}
    for k, v in weights.items():
        if v.ndim == 2 and qtype == "F16":
            v = v.astype(np.float16).astype(np.float32)
        elif v.ndim == 2 and qtype != "F32":
            v = gguf.quants.dequantize(gguf.quants.quantize(v, t), t)
        out[k] = v
    return out


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
@pytest.mark.parametrize("tied", [False, True])
def test_converted_model_computes_what_the_original_does(
    qtype: str,
    tied: bool,
    tmp_path: Path,
    tiny_llama: tuple[dict[str, np.ndarray], list[str]],
    write_tiny_gguf: Callable[..., Path],
) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf", qtype, tied=tied)
    report = ftx.convert(src, tmp_path / "out")
    model, config = mlx_lm_utils.load_model(tmp_path / "out")
    weights = _roundtrip(tiny_llama[0], qtype)
    if tied:
        weights.pop("lm_head.weight")
    want = _reference(weights, config)
    got = _logits(model)
    assert config["tie_word_embeddings"] is tied
    # On the CPU everything is written (and computed) in float32 by default.
    assert config["torch_dtype"] == "float32"
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert got[-1].argmax() == want[-1].argmax()
    kept = {"Q8_0": "q8", "Q4_0": "q4", "Q4_1": "q4"}
    kinds = {"F32": {"f32"}, "F16": {"f16", "f32"}}.get(
        qtype, {"f32", kept.get(qtype, f"{qtype.lower()}->f32")}
    )
    assert set(report.tensors) == kinds
    assert report.parameters == sum(
        v.size for k, v in tiny_llama[0].items() if not (tied and k == "lm_head.weight")
    )


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_dequantize_writes_float_weights_with_the_same_values(
    qtype: str, tmp_path: Path, write_tiny_gguf: Callable[..., Path]
) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf", qtype)
    kept = ftx.convert(src, tmp_path / "q")
    full = ftx.convert(src, tmp_path / "f", dequantize=True)
    assert kept.quantization == {"group_size": 32, "bits": int(qtype[1])}
    assert full.quantization is None
    assert set(full.tensors) == {"f32", f"q{qtype[1]}->f32"}
    assert full.bytes_written > kept.bytes_written
    config = json.loads((tmp_path / "f" / "config.json").read_text())
    assert "quantization" not in config and config["torch_dtype"] == "float32"
    weights = mx.load(str(tmp_path / "f" / "model.safetensors"))
    assert not [k for k in weights if k.endswith((".scales", ".biases"))]
    a, _ = mlx_lm_utils.load_model(tmp_path / "q")
    b, _ = mlx_lm_utils.load_model(tmp_path / "f")
    assert np.abs(_logits(a) - _logits(b)).max() < 1e-4 * np.abs(_logits(b)).max()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_is_that_of_floats_and_scales(
    dtype: str,
    tmp_path: Path,
    tiny_llama: tuple[dict[str, np.ndarray], list[str]],
    write_tiny_gguf: Callable[..., Path],
) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf", "Q4_1")
    report = ftx.convert(src, tmp_path / "out", dtype=dtype)
    assert report.manifest["options"] == {"dequantize": False, "dtype": dtype}
    weights = mx.load(str(tmp_path / "out" / "model.safetensors"))
    kinds = {str(v.dtype).rpartition(".")[2] for k, v in weights.items() if k[-6:] != "weight"}
    assert kinds == {dtype}
    model, config = mlx_lm_utils.load_model(tmp_path / "out")
    assert config["torch_dtype"] == dtype
    want = _reference(_roundtrip(tiny_llama[0], "Q4_1"), config)
    # Half precision rounds the scales and every activation: close, not equal (bfloat16 keeps
    # 8 bits of mantissa, float16 11).
    tol = {"float16": 2e-2, "bfloat16": 1e-1}[dtype]
    assert np.abs(_logits(model) - want).max() < tol * np.abs(want).max()


def test_an_unknown_dtype_is_a_config_error(
    tmp_path: Path, write_tiny_gguf: Callable[..., Path]
) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf", "F16")
    with pytest.raises(ftx.ConfigError, match="float64"):
        ftx.convert(src, tmp_path / "out", dtype="float64")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]


def test_folder_has_config_tokenizer_and_manifest(
    tmp_path: Path, write_tiny_gguf: Callable[..., Path]
) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf", "Q8_0")
    report = ftx.convert(src, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "ftx_convert.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_key_value_heads"] == TINY["kv_heads"]
    assert config["rms_norm_eps"] == 1e-5
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert (tc["bos_token"], tc["eos_token"], tc["pad_token"]) == (
        "<|endoftext|>",
        "<|im_end|>",
        "<|im_end|>",
    )
    assert tc["chat_template"].startswith("{% for m in messages %}")
    manifest = json.loads((out / "ftx_convert.json").read_text())
    assert manifest == report.manifest
    assert manifest["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert manifest["source"]["bytes"] == src.stat().st_size
    assert (out / manifest["source"]["path"]).resolve() == src.resolve()
    assert manifest["options"] == {"dequantize": False, "dtype": "float32"}
    assert manifest["ftx_version"] == ftx.__version__


def test_an_existing_folder_is_kept_unless_forced(
    tmp_path: Path, write_tiny_gguf: Callable[..., Path]
) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf", "F16")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(ftx.ConfigError, match="already exists"):
        ftx.convert(src, out)
    assert (out / "mine.txt").read_text() == "keep"
    ftx.convert(src, out, force=True)
    assert not (out / "mine.txt").exists()
    assert (out / "model.safetensors").is_file()
    # Nothing but the source and the folder: no temporary or old folders left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.gguf"]


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        ftx.convert(tmp_path / "nope.gguf", tmp_path / "out")


def test_cli_converts_and_refuses_to_overwrite(
    tmp_path: Path, write_tiny_gguf: Callable[..., Path]
) -> None:
    import subprocess
    import sys

    src = write_tiny_gguf(tmp_path / "tiny.gguf", "Q4_0")
    cmd = [sys.executable, "-m", "ftx.cli", "convert", str(src), "--out", str(tmp_path / "m")]
    done = subprocess.run([*cmd, "--json", "--dequantize"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["options"] == {"dequantize": True, "dtype": "float32"}
    assert report["model"]["tensors"] == {"f32": 5, "q4->f32": 16}
    assert report["out_dir"] == str(tmp_path / "m")
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr

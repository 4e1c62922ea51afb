"""``ftx convert`` on a tiny model of each architecture, written as llama.cpp's converter writes
it: the converted folder computes the logits of the same weights loaded into mlx-lm directly.

Tolerance: float32 and float16 files, max |difference| <= 1e-4 x max |logit| (float16 weights
are compared with the same float16-rounded weights); Q8_0/Q4_0 files, the same bound against the
weights as quantized and dequantized by the ``gguf`` package, as they stay quantized without loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from arch_models import CONFIGS, logits, reference_model, tiny_weights, write_gguf

import ftx

pytestmark = pytest.mark.mlx
mx = pytest.importorskip("mlx.core")
mlx_lm_utils = pytest.importorskip("mlx_lm.utils")
gguf = pytest.importorskip("gguf")

# What the converted config.json says for each: mlx-lm's model_type
MODEL_TYPES = {"mistral": "llama", "gemma3": "gemma3_text", "phi3-longrope": "phi3"}


def _as_stored(weights: dict[str, np.ndarray], qtype: str) -> dict[str, np.ndarray]:
    """The weights as the file holds them: matrices rounded or quantized and back."""
    t = gguf.GGMLQuantizationType[qtype]
    out = {}
    for k, v in weights.items():
        if v.ndim == 2 and qtype == "F16":
            v = v.astype(np.float16).astype(np.float32)
        elif v.ndim == 2 and qtype != "F32":
            v = gguf.quants.dequantize(gguf.quants.quantize(v, t), t)
        out[k] = v
    return out


# F16 files are checked for llama in test_convert_model and for gemma3 below: the tensor type is
# read the same way whatever the architecture.
@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_converted_model_computes_what_mlx_lm_does(name: str, qtype: str, tmp_path: Path) -> None:
    weights = tiny_weights(name)
    src = write_gguf(name, weights, tmp_path / "tiny.gguf", qtype)
    report = ftx.convert(src, tmp_path / "out")
    assert report.architecture == MODEL_TYPES.get(name, name)
    model, config = mlx_lm_utils.load_model(tmp_path / "out")
    want = logits(reference_model(name, _as_stored(weights, qtype)))
    got = logits(model)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), name
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert report.parameters == sum(v.size for v in weights.values())
    hf = CONFIGS[name]
    for key in ("hidden_size", "num_key_value_heads", "head_dim", "tie_word_embeddings"):
        assert config[key] == hf[key], key


def test_gemma3_keeps_its_sliding_window_pattern_and_rope(tmp_path: Path) -> None:
    weights = tiny_weights("gemma3")
    src = write_gguf("gemma3", weights, tmp_path / "g.gguf", "F16")
    ftx.convert(src, tmp_path / "out")
    model, config = mlx_lm_utils.load_model(tmp_path / "out")
    want_logits = logits(reference_model("gemma3", _as_stored(weights, "F16")))
    assert np.abs(logits(model) - want_logits).max() <= 1e-4 * np.abs(want_logits).max()
    want = CONFIGS["gemma3"]
    for key in ("sliding_window", "sliding_window_pattern", "rope_local_base_freq", "rope_theta"):
        assert config[key] == want[key], key
    assert config["rope_scaling"]["factor"] == want["rope_scaling"]["factor"]


def test_q4_0_kept_quantized_is_what_mlx_reads(tmp_path: Path) -> None:
    """ftx repacks Q4_0/Q4_1/Q8_0 blocks itself; MLX's own GGUF reader agrees bit for bit."""
    from ftx.gguf.reader import read_gguf

    weights = tiny_weights("qwen2")
    for qtype in ("Q4_0", "Q4_1", "Q8_0"):
        src = write_gguf("qwen2", weights, tmp_path / f"{qtype}.gguf", qtype)
        own = read_gguf(src).tensors
        mlx = mx.load(str(src))
        for name, t in own.items():
            if t.kept_bits is None:
                continue
            w, scales, biases = t.blocks()
            base = name.removesuffix(".weight")
            assert mx.array_equal(w, mlx[f"{base}.weight"]).item(), name
            assert mx.array_equal(scales, mlx[f"{base}.scales"]).item(), name
            assert mx.array_equal(biases, mlx[f"{base}.biases"]).item(), name

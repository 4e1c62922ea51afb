"""K-quant GGUF files made by llama.cpp itself, converted by ``ftx convert``.

The ``gguf`` package cannot make K-quants (its ``quantize`` raises NotImplementedError for
Q4_K, Q5_K, Q6_K), so llama.cpp's own quantizer (``llama_model_quantize`` of llama-cpp-python)
makes them from an F16 file of a tiny model, with its usual per-tensor mixes (Q4_K_M is Q4_K
with Q6_K for some tensors...). The reference for the dequantized weights is llama.cpp's own
dequantization: the same quantizer requantizing the K-quant file to F32. The reference for the
logits is llama.cpp running the K-quant file.
"""

from __future__ import annotations

import ctypes
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from arch_models import PROMPT, tiny_weights, write_gguf
from tiny_models import llama_cpp_model

import ftx

pytestmark = pytest.mark.mlx
mx = pytest.importorskip("mlx.core")
mlx_lm_utils = pytest.importorskip("mlx_lm.utils")
gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

# Tolerances (max |difference| / max |logit|): the weights, exactly llama.cpp's; the logits,
# 1e-5 against llama.cpp running its float32 dequantization with a float32 KV cache (1e-3 for
# Gemma: see below); 6e-2 against llama.cpp running the K-quant file itself.

# llama.cpp file type -> the K-quant tensor types its mix must hold in these tiny models
FTYPES = {
    "Q4_K_M": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, {"Q4_K", "Q6_K"}),
    "Q5_K_M": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M, {"Q5_K", "Q6_K"}),
    "Q6_K": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K, {"Q6_K"}),
    "Q3_K_M": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M, {"Q3_K"}),
    "Q2_K": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K, {"Q2_K"}),
}
CASES = [("llama", f) for f in FTYPES] + [
    (name, "Q4_K_M") for name in ("mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")
]


def _quantize(src: Path, dst: Path, ftype: int) -> Path:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize({src.name} -> {dst.name}) returned {rc}"
    return dst


def _types(path: Path) -> Counter[str]:
    reader = gguf.GGUFReader(path)
    return Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) == 2)


def _weights(folder: Path) -> dict[str, Any]:
    return dict(mx.load(str(folder / "model.safetensors")))


def _llama_cpp_logits(path: Path) -> np.ndarray:
    with llama_cpp_model(path, n_ctx=64) as llm:
        llm.eval(PROMPT)
        return np.array(llm.scores[: len(PROMPT)], dtype=np.float32)


@pytest.mark.parametrize(("name", "mix"), CASES)
def test_k_quants_dequantize_as_llama_cpp_does(name: str, mix: str, tmp_path: Path) -> None:
    ftype, want_types = FTYPES[mix]
    f16 = write_gguf(name, tiny_weights(name), tmp_path / "f16.gguf", "F16")
    kq = _quantize(f16, tmp_path / f"{mix}.gguf", ftype)
    types = _types(kq)
    print(f"{name} {mix}: {dict(sorted(types.items()))}")
    assert want_types <= set(types), types
    # llama.cpp's own dequantization of the same file
    f32 = _quantize(kq, tmp_path / "f32.gguf", llama_cpp.LLAMA_FTYPE_ALL_F32)
    assert set(_types(f32)) == {"F32"}

    report = ftx.convert(kq, tmp_path / "ftx")
    ftx.convert(f32, tmp_path / "ref")
    assert {k.split("->")[0] for k in report.tensors} >= {t.lower() for t in want_types}
    got, ref = _weights(tmp_path / "ftx"), _weights(tmp_path / "ref")
    assert got.keys() == ref.keys()
    for key, want in ref.items():
        # gguf.quants and llama.cpp compute each value as the same float32 products
        np.testing.assert_array_equal(np.array(got[key]), np.array(want), err_msg=key)

    model, _ = mlx_lm_utils.load_model(tmp_path / "ftx")
    ours = np.array(model(mx.array([PROMPT])).astype(mx.float32))[0]
    # llama.cpp running its own float32 dequantization: the same weights, the same function
    exact = _llama_cpp_logits(f32)
    err = np.abs(ours - exact).max() / np.abs(exact).max()
    # llama.cpp running the K-quant file: it quantizes the activations to 8 bits for its
    # K-quant dot products (Q8_K), so the two agree to a few % of the logits' range only
    quant = _llama_cpp_logits(kq)
    err_q = np.abs(ours - quant).max() / np.abs(quant).max()
    print(f"{name} {mix}: max |ftx - llama.cpp| / max |llama.cpp|: {err:.1e} (F32), {err_q:.1e}")
    # ggml's CPU GELU (Gemma's MLP) reads a float16 table: 1e-4 off mlx-lm's tanh GELU
    assert err < (1e-3 if name.startswith("gemma") else 1e-5)
    assert err_q < 6e-2

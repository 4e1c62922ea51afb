"""The one table between Hugging Face / mlx-lm weight names and llama.cpp's GGUF tensor names, and
the Q/K row permutation between their two RoPE layouts: ``convert`` reads with it, ``fuse
--format gguf`` writes with it."""

from __future__ import annotations

from typing import Any, TypeVar

A = TypeVar("A")

TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
BLOCK = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}
# Gemma 2/3 norm both sides of attention and of the MLP: HF's post_attention_layernorm is
# llama.cpp's post_attention_norm there, and its ffn_norm is the pre-feedforward one.
_GEMMA = {
    **BLOCK,
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
# Phi-3 keeps Q, K, V in one matrix and gate and up in another, in both layouts.
_PHI3 = {
    **{k: v for k, v in BLOCK.items() if not k.startswith(("self_attn", "mlp"))},
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# GGUF general.architecture -> its block table (llama, mistral, qwen2, qwen3 share BLOCK).
BLOCKS = {"gemma2": _GEMMA, "gemma3": _GEMMA, "phi3": _PHI3}
_TOP_HF = {g: h for h, g in TOP.items()}
_BLOCK_HF = {g: h for h, g in BLOCK.items()}
_BLOCKS_HF = {arch: {g: h for h, g in b.items()} for arch, b in BLOCKS.items()}


def gguf_module(module: str, arch: str = "llama") -> str | None:
    """mlx-lm module name (``model.layers.3.self_attn.q_proj``) -> GGUF (``blk.3.attn_q``)."""
    if module in TOP:
        return TOP[module]
    block = BLOCKS.get(arch, BLOCK)
    parts = module.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in block:
        return f"blk.{parts[2]}.{block[parts[3]]}"
    return None


def hf_module(name: str, arch: str = "llama") -> str | None:
    """GGUF tensor name (``blk.3.attn_q``) -> mlx-lm module name."""
    if name in _TOP_HF:
        return _TOP_HF[name]
    blk, _, rest = name.partition(".")
    index, _, kind = rest.partition(".")
    hf = _BLOCKS_HF.get(arch, _BLOCK_HF)
    if blk == "blk" and index.isdigit() and kind in hf:
        return f"model.layers.{index}.{hf[kind]}"
    return None


# Per head, llama.cpp's llama rope pairs each dimension with its rotation partner, rows in
# (half, 2) order; Hugging Face's `rotate_half` (and mlx-lm's non-traditional RoPE) rotates the two
# halves, rows in (2, half) order. Rows are output features, so the same reordering applies to
# packed quantized rows, their scales and biases, and a bias vector. NumPy and MLX arrays alike.
def permute_qk(w: A, heads: int) -> A:
    """Hugging Face row order -> llama.cpp's."""
    a: Any = w
    rows = a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:])
    out: A = rows.swapaxes(1, 2).reshape(a.shape)
    return out


def unpermute_qk(w: A, heads: int) -> A:
    """llama.cpp's row order -> Hugging Face's."""
    a: Any = w
    rows = a.reshape(heads, a.shape[0] // heads // 2, 2, *a.shape[1:])
    out: A = rows.swapaxes(1, 2).reshape(a.shape)
    return out

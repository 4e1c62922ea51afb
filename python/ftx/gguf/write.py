"""A fused model as one GGUF file for llama.cpp / Ollama (F32, F16 or Q8_0), with its tokenizer
and chat template in the metadata. Architectures: llama (and mistral, the same layout), qwen2,
qwen3.

The conventions of llama.cpp's own converter (``convert_hf_to_gguf.py``) are followed. Tensor
names: ``token_embd``, ``blk.N.attn_q``, ..., ``output``. Q/K rows: Hugging Face (and mlx-lm)
llama weights rotate the two halves of each head (``rotate_half``); llama.cpp's llama rope
rotates interleaved pairs, so for llama the rows of ``attn_q`` and ``attn_k`` are permuted per
head (``permute_qk``; ``unpermute_qk`` undoes it); qwen2/qwen3 use llama.cpp's NEOX rope and
are written as they are. Llama 3's rope scaling becomes the ``rope_freqs`` tensor, computed as
llama.cpp's converter does. 1-D tensors (norms, biases) stay F32, as there.
Q8_0 works in blocks of 32 along a row, so it commutes with that row permutation: the error
measured on the unpermuted weights is the error of the file.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx

import gguf
import numpy as np
import numpy.typing as npt

from ftx.errors import ConfigError
from ftx.export.merge import QuantSpec
from ftx.export.quantization import LayerError, weight_error
from ftx.gguf.names import gguf_module, permute_qk

# model_type -> (GGUF architecture, whether Q/K rows are permuted for llama.cpp's rope).
ARCHITECTURES = {
    "llama": ("llama", True),
    "mistral": ("llama", True),
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
}
# pre_tokenizer Split regex -> llama.cpp's tokenizer.ggml.pre name.
PRE_TOKENIZERS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}
# The float type of the 2-D tensors (Q8_0 blocks keep an f16 scale; 1-D tensors are F32).
FLOAT_OF = {"f32": "float32", "f16": "float16", "q8_0": "float16"}
Q8_BLOCK = 32
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
Array = npt.NDArray[Any]


def gguf_name(name: str) -> str:
    """mlx-lm weight name -> llama.cpp tensor name."""
    module, leaf = name.rsplit(".", 1)
    if (tensor := gguf_module(module)) is None:
        raise ConfigError(f"format = gguf: no llama.cpp name for weight {name}")
    return f"{tensor}.{leaf}"


@dataclass(frozen=True)
class Hyper:
    arch: str
    permute: bool
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    context: int
    vocab: int

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> Hyper:
        if c.get("model_type") not in ARCHITECTURES:
            raise ConfigError(
                f"format = gguf: model_type {c.get('model_type')!r} is not supported "
                f"(supported: {', '.join(ARCHITECTURES)})"
            )
        arch, permute = ARCHITECTURES[c["model_type"]]
        scaling = c.get("rope_scaling")
        kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
        if kind not in (None, "default", "llama3") or (kind == "llama3" and arch != "llama"):
            raise ConfigError(f"format = gguf: rope_scaling {scaling} is not supported yet")
        heads = int(c["num_attention_heads"])
        return cls(
            arch=arch,
            permute=permute,
            hidden=int(c["hidden_size"]),
            layers=int(c["num_hidden_layers"]),
            ffn=int(c["intermediate_size"]),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            head_dim=int(c.get("head_dim") or c["hidden_size"] // heads),
            eps=float(c.get("rms_norm_eps", 1e-5)),
            rope_theta=float(c.get("rope_theta", 10000.0)),
            rope_scaling=scaling if kind == "llama3" else None,
            context=int(c.get("max_position_embeddings", 2048)),
            vocab=int(c["vocab_size"]),
        )

    def qk_heads(self, gname: str) -> int | None:
        """Heads to permute the rows of this tensor by, if it is a llama Q or K projection."""
        if not self.permute:
            return None
        if ".attn_q." in gname:
            return self.heads
        if ".attn_k." in gname:
            return self.kv_heads
        return None


def llama3_rope_factors(hp: Hyper) -> Array:
    """Llama 3's frequency scaling as per-frequency divisors (``rope_freqs``), the formula of
    llama.cpp's converter (and of mlx-lm's ``Llama3RoPE``)."""
    s = hp.rope_scaling or {}
    factor = float(s.get("factor", 8.0))
    low, high = float(s.get("low_freq_factor", 1.0)), float(s.get("high_freq_factor", 4.0))
    old_context = float(s.get("original_max_position_embeddings", 8192))
    dims = hp.head_dim
    freqs = 1.0 / hp.rope_theta ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    wavelen = 2 * math.pi / freqs
    smooth = (old_context / wavelen - low) / (high - low)
    factors = np.where(
        wavelen < old_context / high,
        1.0,
        np.where(wavelen > old_context / low, factor, 1.0 / ((1 - smooth) / factor + smooth)),
    )
    out: Array = factors.astype(np.float32)
    return out


@dataclass(frozen=True)
class GgufResult:
    tensors: int
    pre_tokenizer: str
    errors: list[LayerError]
    # The float weights the file holds (Q8_0 dequantized), under mlx-lm names, unpermuted:
    # what a perplexity of the GGUF's weights is computed with.
    quantized_weights: dict[str, mx.array]


def pre_tokenizer(tok: dict[str, Any]) -> str:
    """llama.cpp's name of the pre-tokenizer: plain byte-level with GPT-2's regex is ``gpt-2``,
    a Split by a known regex then byte-level is named by that regex (Llama 3, Qwen2); anything
    else gets llama.cpp's ``default`` (its generic regex)."""
    pre = tok.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
        return PRE_TOKENIZERS.get(steps[0].get("pattern", {}).get("Regex", ""), "default")
    return "default"


def _is_sentencepiece(tok: dict[str, Any]) -> bool:
    """A SentencePiece BPE vocabulary in tokenizer.json form (Llama 2, Mistral): BPE with byte
    fallback, ``▁`` for spaces."""
    model = tok.get("model", {})
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def add_tokenizer(writer: gguf.GGUFWriter, folder: Path, vocab: int) -> str:
    """tokenizer.ggml.* from tokenizer.json, special tokens and the chat template from the
    tokenizer files. A byte-level BPE is llama.cpp's ``gpt2`` model (with its merges); a
    SentencePiece BPE its ``llama`` model, whose merge order is the pieces' scores: SentencePiece
    ranks a BPE vocabulary's pieces by merge order, so a piece's score is minus its id."""
    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = tok.get("model", {})
    spm = _is_sentencepiece(tok)
    byte_level = (
        model.get("type") == "BPE"
        and not model.get("byte_fallback")
        and (tok.get("decoder") or {}).get("type") == "ByteLevel"
    )
    if not spm and not byte_level:
        raise ConfigError(
            f"format = gguf: {folder}/tokenizer.json is neither a byte-level BPE nor a "
            "SentencePiece BPE tokenizer, the kinds written so far"
        )
    tokens = [f"[PAD{i}]" for i in range(vocab)]
    types = [gguf.TokenType.UNUSED] * vocab
    scores = [-1e9] * vocab
    unk = model.get("unk_token")
    for text, i in model["vocab"].items():
        if i < vocab:
            tokens[i], types[i], scores[i] = text, gguf.TokenType.NORMAL, -float(i)
            if spm and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
                types[i] = gguf.TokenType.BYTE
            elif spm and text == unk:
                types[i] = gguf.TokenType.UNKNOWN
    for added in tok.get("added_tokens", []):
        i = int(added["id"])
        if i < vocab:
            tokens[i] = added["content"]
            if added["content"] == unk:
                types[i] = gguf.TokenType.UNKNOWN
            else:
                special = added.get("special")
                types[i] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    if spm:
        pre = "default"
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        normalizers = (tok.get("normalizer") or {}).get("normalizers", [])
        writer.add_add_space_prefix(any(n.get("type") == "Prepend" for n in normalizers))
    else:
        pre = pre_tokenizer(tok)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    special = gguf.SpecialVocab(folder, load_merges=not spm, n_vocab=vocab)
    special.add_to_gguf(writer, quiet=True)
    if special.chat_template is None and (folder / "chat_template.jinja").is_file():
        writer.add_chat_template((folder / "chat_template.jinja").read_text(encoding="utf-8"))
    return pre


def _to_numpy(a: mx.array) -> Array:
    return np.array(a.astype(mx.float32))


def write_gguf(
    path: Path,
    weights: dict[str, mx.array],
    config: dict[str, Any],
    tokenizer_dir: Path,
    kind: str,
    name: str,
    deltas: dict[str, float],
) -> GgufResult:
    """Writes ``weights`` (float, mlx-lm llama names) as one GGUF of type ``kind``;
    ``deltas`` are the norms of the adapter's changes per merged layer, for the error report."""
    hp = Hyper.from_config(config)
    writer = gguf.GGUFWriter(str(path), hp.arch)
    writer.add_name(name)
    writer.add_context_length(hp.context)
    writer.add_embedding_length(hp.hidden)
    writer.add_block_count(hp.layers)
    writer.add_feed_forward_length(hp.ffn)
    writer.add_head_count(hp.heads)
    writer.add_head_count_kv(hp.kv_heads)
    writer.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim * hp.heads != hp.hidden:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    writer.add_layer_norm_rms_eps(hp.eps)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_vocab_size(hp.vocab)
    writer.add_file_type(FILE_TYPES[kind])
    if kind == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    pre = add_tokenizer(writer, tokenizer_dir, hp.vocab)

    errors: list[LayerError] = []
    dequantized: dict[str, mx.array] = {}
    spec = QuantSpec(Q8_BLOCK, 8, "q8_0")
    if hp.rope_scaling is not None:
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(hp))
    for wname in sorted(weights):
        gname = gguf_name(wname)
        w = _to_numpy(weights[wname])
        raw_type: gguf.GGMLQuantizationType | None = None
        if w.ndim == 1 or kind == "f32":
            data = w.astype(np.float32)
        elif kind == "q8_0" and w.shape[-1] % Q8_BLOCK == 0:
            data = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
            raw_type = gguf.GGMLQuantizationType.Q8_0
            back = mx.array(gguf.quants.dequantize(data, raw_type))
            module = wname.rsplit(".", 1)[0]
            errors.append(weight_error(module, weights[wname], back, spec, deltas.get(module)))
            dequantized[wname] = back
        else:
            data = w.astype(np.float16)
        if (heads := hp.qk_heads(gname)) is not None:
            data = permute_qk(data, heads)
        writer.add_tensor(gname, data, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GgufResult(len(weights), pre, errors, dequantized)

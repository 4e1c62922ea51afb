"""Tiny mlx-lm models of each architecture ``ftx convert`` reads, and their GGUF files written the
way llama.cpp's ``convert_hf_to_gguf.py`` writes them (imported by name: tests/ is not a
package).

The GGUF side does not use ftx's own name table: tensor names come from the ``gguf`` package's
``TensorNameMap`` (llama.cpp's converter's), the Q/K permutation and Gemma's ``1 + weight`` norms
are redone here from llama.cpp's converter. Matrices are 256 wide (or a multiple), so llama.cpp
can quantize every one of them to a K-quant (QK_K = 256 values per super-block).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from convert_support import TEMPLATE, byte_level_alphabet, permute

PROMPT = [5, 70, 256, 257, 13, 99, 200, 3]
TOKENS = [*byte_level_alphabet(), "Ġt", "he", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_BASE: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 256,
    "vocab_size": len(TOKENS),
    "tie_word_embeddings": False,
}
# Hugging Face config.json of each tiny model, by the name the tests use.
CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {**_BASE, "model_type": "llama"},
    # Mistral's GGUF files are llama files; mlx-lm runs Mistral as llama too.
    "mistral": {**_BASE, "model_type": "mistral", "num_key_value_heads": 1, "rope_theta": 1e6},
    "qwen2": {**_BASE, "model_type": "qwen2", "tie_word_embeddings": True, "rope_theta": 1e6},
    # head_dim * heads != hidden, as in the real Qwen3 models: only attention.key_length says so
    "qwen3": {**_BASE, "model_type": "qwen3", "head_dim": 128, "rope_theta": 1e6},
    "gemma2": {
        **_BASE,
        "model_type": "gemma2",
        "tie_word_embeddings": True,
        "query_pre_attn_scalar": 64,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "sliding_window": 4096,
        "rms_norm_eps": 1e-6,
    },
    "gemma3": {
        **_BASE,
        "model_type": "gemma3_text",
        "tie_word_embeddings": True,
        "query_pre_attn_scalar": 64,
        "rope_theta": 1e6,
        "rope_local_base_freq": 10000.0,
        "sliding_window": 512,
        "sliding_window_pattern": 2,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "rms_norm_eps": 1e-6,
    },
    "phi3": {**_BASE, "model_type": "phi3"},
    # Phi-3.5-mini's 128k context: LongRoPE, its factors stored by llama.cpp as two tensors
    "phi3-longrope": {
        **_BASE,
        "model_type": "phi3",
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "rope_scaling": {
            "type": "longrope",
            "long_factor": [1.0 + 0.5 * i for i in range(32)],
            "short_factor": [1.0 + 0.01 * i for i in range(32)],
        },
    },
}
# gguf.MODEL_ARCH member of each (what llama.cpp writes as general.architecture).
GGUF_ARCH = {
    "llama": "LLAMA",
    "mistral": "LLAMA",
    "qwen2": "QWEN2",
    "qwen3": "QWEN3",
    "gemma2": "GEMMA2",
    "gemma3": "GEMMA3",
    "phi3": "PHI3",
    "phi3-longrope": "PHI3",
}


def model_classes(config: dict[str, Any]) -> Any:
    from mlx_lm.utils import _get_classes

    return _get_classes(config)


def tiny_weights(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights of every parameter the mlx-lm model of ``name`` has, under HF names."""
    from mlx.utils import tree_flatten

    config = CONFIGS[name]
    model_class, args_class = model_classes(config)
    model = model_class(args_class.from_dict(config))
    rng = np.random.default_rng(seed)
    gemma = config["model_type"].startswith("gemma")
    out = {}
    for key, p in tree_flatten(model.parameters()):
        if config["tie_word_embeddings"] and key == "lm_head.weight":
            continue
        shape = tuple(p.shape)
        if len(shape) == 2:
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        elif key.endswith("norm.weight"):
            # Gemma's norms multiply by 1 + weight, the others by the weight
            w = (0.0 if gemma else 1.0) + 0.2 * rng.standard_normal(shape)
        else:
            w = 0.1 * rng.standard_normal(shape)
        out[key] = w.astype(np.float32)
    return out


def reference_model(name: str, weights: dict[str, np.ndarray]) -> Any:
    """The mlx-lm model of ``name`` with ``weights``, built without ftx or any file."""
    import mlx.core as mx

    config = CONFIGS[name]
    model_class, args_class = model_classes(config)
    model = model_class(args_class.from_dict(config))
    w = {k: mx.array(v) for k, v in weights.items()}
    if hasattr(model, "sanitize"):
        w = model.sanitize(w)
    model.load_weights(list(w.items()), strict=True)
    return model


def logits(model: Any) -> np.ndarray:
    import mlx.core as mx

    out = model(mx.array([PROMPT]))
    return np.array(out.astype(mx.float32))[0]


def write_gguf(
    name: str,
    weights: dict[str, np.ndarray],
    path: Path,
    qtype: str = "F32",
    vocab: tuple[str, str] = ("gpt2", "gpt-2"),
) -> Path:
    """``weights`` of the tiny ``name`` as llama.cpp's converter writes them, matrices as
    ``qtype`` (F32, F16 or one the ``gguf`` package quantizes: Q8_0, Q4_0, Q5_0...), with a
    byte-level vocabulary (``vocab``: tokenizer.ggml.model and .pre)."""
    import gguf

    config = CONFIGS[name]
    arch = getattr(gguf.MODEL_ARCH, GGUF_ARCH[name])
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    t = gguf.GGMLQuantizationType[qtype]
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    # not "tiny-phi3": llama.cpp gives Phi-3 vocabularies (by name) attributes of "</s>"
    w.add_name("tiny")
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(config["rope_theta"])
    head_dim = config["head_dim"]
    if name in ("qwen3", "gemma2", "gemma3"):
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if name in ("llama", "mistral") or name.startswith("phi3"):
        w.add_rope_dimension_count(head_dim)
    if name == "phi3-longrope":
        scaling = config["rope_scaling"]
        w.add_rope_scaling_orig_ctx_len(config["original_max_position_embeddings"])
        w.add_tensor("rope_factors_long.weight", np.array(scaling["long_factor"], np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(scaling["short_factor"], np.float32))
    if name == "gemma2":
        w.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        w.add_final_logit_softcapping(config["final_logit_softcapping"])
        w.add_sliding_window(config["sliding_window"])
    if name == "gemma3":
        w.add_sliding_window(config["sliding_window"])
        w.add_sliding_window_pattern(config["sliding_window_pattern"])
        w.add_rope_freq_base_swa(config["rope_local_base_freq"])
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(config["rope_scaling"]["factor"])
    w.add_tokenizer_model(vocab[0])
    w.add_tokenizer_pre(vocab[1])
    w.add_token_list(TOKENS)
    w.add_token_types([1] * (len(TOKENS) - 3) + [3, 3, 3])
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(len(TOKENS) - 3)
    w.add_eos_token_id(len(TOKENS) - 1)
    w.add_chat_template(TEMPLATE)
    for hf, a in weights.items():
        gname = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        assert gname is not None, hf
        if name in ("llama", "mistral") and ".attn_q." in gname:
            a = permute(a, config["num_attention_heads"])
        elif name in ("llama", "mistral") and ".attn_k." in gname:
            a = permute(a, config["num_key_value_heads"])
        if name.startswith("gemma") and gname.endswith("norm.weight"):
            a = a + 1
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

"""GGUF tensors as mlx-lm weights and ``config.json``, for the llama architecture.

MLX reads GGUF's Q4_0, Q4_1 and Q8_0 blocks as its own affine-quantized arrays (a packed
``weight`` plus ``scales`` and ``biases`` per 32 values), so quantized tensors are copied as
they are: no dequantize-requantize round trip, no loss.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from ftx.runtime.mlx import mx

import numpy as np

from ftx.errors import ConfigError
from ftx.gguf.names import hf_module, unpermute_qk

# Every GGUF block type that MLX reads natively holds 32 values per block.
GROUP_SIZE = 32

# The float types a converted model can be written in -> short names for reports.
DTYPES = {"float16": "f16", "bfloat16": "bf16", "float32": "f32"}
# Precomputed RoPE frequency factors: folded into config.json's rope_scaling instead.
_ROPE_FREQS = "rope_freqs"


@dataclass
class _Tensor:
    """One module's parameters as MLX loaded them from the GGUF file."""

    weight: mx.array
    # (scales, biases) of a quantized weight, one pair per 32 values of a row
    quant: tuple[mx.array, mx.array] | None = None
    bias: mx.array | None = None

    def unpermute(self, heads: int) -> _Tensor:
        """Undoes llama.cpp's reordering of Q/K rows for its interleaved RoPE."""
        quant = None
        if self.quant is not None:
            quant = (unpermute_qk(self.quant[0], heads), unpermute_qk(self.quant[1], heads))
        bias = None if self.bias is None else unpermute_qk(self.bias, heads)
        return _Tensor(unpermute_qk(self.weight, heads), quant, bias)

    @property
    def bits(self) -> int | None:
        if self.quant is None:
            return None
        return self.weight.shape[-1] * 32 // (self.quant[0].shape[-1] * GROUP_SIZE)

    @property
    def size(self) -> int:
        cols = self.weight.shape[-1] if self.quant is None else self.quant[0].shape[-1] * GROUP_SIZE
        return math.prod(self.weight.shape[:-1]) * cols


@dataclass
class MLXModel:
    """What goes into ``model.safetensors`` and ``config.json``."""

    weights: dict[str, mx.array]
    config: dict[str, Any]
    parameters: int
    # "q4", "q8" (kept quantized), "q4->f16" (dequantized), "f16", "f32" -> number of tensors
    tensor_kinds: dict[str, int]


def _group(arrays: Mapping[str, mx.array]) -> dict[str, _Tensor]:
    parts: dict[str, dict[str, mx.array]] = {}
    for name, array in arrays.items():
        base, _, kind = name.rpartition(".")
        if kind not in ("weight", "scales", "biases", "bias"):
            base, kind = name, "weight"
        parts.setdefault(base, {})[kind] = array
    out = {}
    for base, p in parts.items():
        if "weight" not in p or ("scales" in p) != ("biases" in p):
            raise ConfigError(f"tensor {base!r} comes as {sorted(p)}, which is not a weight")
        quant = (p["scales"], p["biases"]) if "scales" in p else None
        out[base] = _Tensor(p["weight"], quant, p.get("bias"))
    return out


def llama_config(meta: Mapping[str, Any], tensors: Mapping[str, _Tensor]) -> dict[str, Any]:
    def key(name: str, default: Any = None) -> Any:
        value = meta.get(f"llama.{name}", default)
        if value is None:
            raise ConfigError(f"GGUF metadata key llama.{name} is missing")
        return value

    if meta.get("llama.expert_count"):
        raise ConfigError("mixture-of-experts llama models (llama.expert_count) are not supported")
    hidden, heads = int(key("embedding_length")), int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", hidden // heads))
    if int(key("rope.dimension_count", head_dim)) != head_dim:
        raise ConfigError("llama.rope.dimension_count differs from the head size (partial RoPE)")
    theta = _f32(key("rope.freq_base", 10000.0))
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(key("block_count")),
        "intermediate_size": int(key("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(key("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(key("attention.layer_norm_rms_epsilon")),
        "rope_theta": theta,
        "max_position_embeddings": int(key("context_length", 4096)),
        "vocab_size": tensors["token_embd"].weight.shape[0],
        "tie_word_embeddings": "output" not in tensors,
        "attention_bias": tensors["blk.0.attn_q"].bias is not None,
        "mlp_bias": False,
    }
    scaling = _rope_scaling(meta, tensors, theta, head_dim)
    if scaling is not None:
        config["rope_scaling"] = scaling
    return config


def _f32(value: Any) -> float:
    # GGUF stores these as float32: 1e-05, not 9.999999747378752e-06, in config.json.
    return float(str(np.float32(value)))


def _rope_scaling(
    meta: Mapping[str, Any], tensors: Mapping[str, _Tensor], theta: float, head_dim: int
) -> dict[str, Any] | None:
    kind = meta.get("llama.rope.scaling.type", "none")
    if _ROPE_FREQS in tensors:
        factors = cast("list[float]", tensors[_ROPE_FREQS].weight.tolist())
        return _llama3_scaling(factors, theta, head_dim)
    if kind in ("none", None):
        return None
    if kind == "linear":
        return {"type": "linear", "factor": _f32(meta["llama.rope.scaling.factor"])}
    raise ConfigError(f"llama.rope.scaling.type = {kind!r} is not supported (only linear)")


def _llama3_scaling(factors: list[float], theta: float, head_dim: int) -> dict[str, Any]:
    """Llama 3.1's RoPE scaling, recovered from the per-frequency factors llama.cpp stores.

    Every Llama 3.x release uses low/high frequency factors 1 and 4 and an original context of
    8192; the factors are recomputed from those to make sure the file agrees.
    """
    params: dict[str, Any] = {
        "rope_type": "llama3",
        "factor": max(factors),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    low_wavelen = params["original_max_position_embeddings"] / params["low_freq_factor"]
    high_wavelen = params["original_max_position_embeddings"] / params["high_freq_factor"]
    for i, got in enumerate(factors):
        wavelen = 2 * math.pi * theta ** (2 * i / head_dim)
        if wavelen < high_wavelen:
            want = 1.0
        elif wavelen > low_wavelen:
            want = params["factor"]
        else:
            smooth = (params["original_max_position_embeddings"] / wavelen - 1.0) / 3.0
            want = 1 / ((1 - smooth) / params["factor"] + smooth)
        if not math.isclose(got, want, rel_tol=1e-3):
            raise ConfigError("rope_freqs does not match Llama 3 RoPE scaling; not supported")
    return params


def native_dtype(arrays: Mapping[str, mx.array]) -> str:
    """The precision of a file's matrices: float32 if all are, else float16.

    Norms are float32 in every GGUF file, so only 2-D float tensors count; quantized blocks
    carry float16 scales.
    """
    tensors = _group(arrays)
    floats = [t.weight.dtype for t in tensors.values() if t.quant is None and t.weight.ndim == 2]
    return "float32" if floats and all(d == mx.float32 for d in floats) else "float16"


def to_mlx(
    arrays: Mapping[str, mx.array], meta: Mapping[str, Any], dequantize: bool, dtype: str
) -> MLXModel:
    """Renames, un-permutes and (optionally) dequantizes the tensors of a llama GGUF file.

    ``dtype`` (float16, bfloat16 or float32) is that of every float tensor written, including
    the scales and biases of quantized ones.
    """
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ConfigError(f"general.architecture = {arch!r}: only 'llama' models can be converted")
    tensors = _group(arrays)
    unknown = sorted(n for n in tensors if n != _ROPE_FREQS and hf_module(n) is None)
    if unknown:
        raise ConfigError(f"tensors with no llama counterpart: {', '.join(unknown[:5])}")
    config = llama_config(meta, tensors)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    target = getattr(mx, dtype)
    weights: dict[str, mx.array] = {}
    bits: dict[str, int] = {}
    kinds: Counter[str] = Counter()
    parameters = 0
    for name, t in tensors.items():
        if name == _ROPE_FREQS:
            continue
        path = hf_module(name)
        assert path is not None
        parameters += t.size
        if name.endswith(("attn_q", "attn_k")):
            heads = config["num_attention_heads" if name.endswith("q") else "num_key_value_heads"]
            t = t.unpermute(heads)
        if t.bias is not None:
            weights[f"{path}.bias"] = t.bias.astype(target)
        b = t.bits
        if t.quant is None:
            kinds[DTYPES[str(t.weight.dtype).rpartition(".")[2]]] += 1
            weights[f"{path}.weight"] = t.weight.astype(target)
        elif dequantize:
            kinds[f"q{b}->{DTYPES[dtype]}"] += 1
            # In float32 whatever the target: float16 scale * value products round, and
            # the result must equal what the quantized matmul computes.
            scales, biases = (q.astype(mx.float32) for q in t.quant)
            full = mx.dequantize(t.weight, scales, biases, group_size=GROUP_SIZE, bits=b)
            weights[f"{path}.weight"] = full.astype(target)
        else:
            assert b is not None
            kinds[f"q{b}"] += 1
            bits[path] = b
            weights[f"{path}.weight"] = t.weight
            weights[f"{path}.scales"] = t.quant[0].astype(target)
            weights[f"{path}.biases"] = t.quant[1].astype(target)
    config["torch_dtype"] = dtype
    if bits:
        config["quantization"] = config["quantization_config"] = _quantization(bits)
    return MLXModel(weights, config, parameters, dict(sorted(kinds.items())))


def _quantization(bits: Mapping[str, int]) -> dict[str, Any]:
    """mlx-lm's quantization block: the usual width, plus each module that differs from it."""
    default = Counter(bits.values()).most_common(1)[0][0]
    q: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": default}
    for path, b in sorted(bits.items()):
        if b != default:
            q[path] = {"group_size": GROUP_SIZE, "bits": b}
    return q

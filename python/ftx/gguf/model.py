"""GGUF tensors as mlx-lm weights and ``config.json``, one entry of ``ARCHITECTURES`` per
``general.architecture``.

Each architecture undoes what llama.cpp's ``convert_hf_to_gguf.py`` did to the Hugging Face
weights: its tensor names (``names``), the Q/K row order of llama's interleaved RoPE (llama and
mistral only: the others run llama.cpp's NEOX RoPE on rows as they are), Gemma's RMSNorm
weights stored as ``1 + weight``; and reads back the ``config.json`` keys it wrote as
``{arch}.*`` metadata. Q4_0, Q4_1 and Q8_0 tensors stay quantized (``reader``); the rest are
written as float.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from ftx.runtime.mlx import mx

import numpy as np

from ftx.errors import ConfigError
from ftx.gguf.names import hf_module, unpermute_qk
from ftx.gguf.reader import FLOATS, GROUP_SIZE, Q, RawTensor

# The float types a converted model can be written in -> short names for reports.
DTYPES = {"float16": "f16", "bfloat16": "bf16", "float32": "f32"}
_SHORT = {Q.F32: "f32", Q.F16: "f16", Q.BF16: "bf16"}
# RoPE frequency factors llama.cpp stores as tensors: folded into config.json's rope_scaling.
_ROPE_FREQS = "rope_freqs"  # Llama 3.1
_ROPE_LONG, _ROPE_SHORT = "rope_factors_long", "rope_factors_short"  # Phi-3 LongRoPE
_MISSING = object()


@dataclass(frozen=True)
class _Module:
    """One module's tensors as the GGUF file holds them."""

    weight: RawTensor
    bias: RawTensor | None = None


@dataclass
class MLXModel:
    """What goes into ``model.safetensors`` and ``config.json``."""

    weights: dict[str, mx.array]
    config: dict[str, Any]
    parameters: int
    # "q4", "q8" (kept quantized), "q4->f32", "q6_k->f32" (dequantized), "f16", "f32" -> count
    tensor_kinds: dict[str, int]


class _Keys:
    """The ``{arch}.*`` metadata keys of one file."""

    def __init__(self, meta: Mapping[str, Any], arch: str) -> None:
        self.meta, self.arch = meta, arch

    def get(self, name: str, default: Any = _MISSING) -> Any:
        value = self.meta.get(f"{self.arch}.{name}", default)
        if value is _MISSING:
            raise ConfigError(f"GGUF metadata key {self.arch}.{name} is missing")
        return value

    def int(self, name: str, default: Any = _MISSING) -> int:
        value = self.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(
                f"GGUF metadata key {self.arch}.{name} = {value!r}: one whole number is needed "
                "(per-layer values are not supported)"
            )
        return value

    def float(self, name: str, default: Any = _MISSING) -> float:
        return _f32(self.get(name, default))


def _f32(value: Any) -> float:
    # GGUF stores these as float32: 1e-05, not 9.999999747378752e-06, in config.json.
    return float(str(np.float32(value)))


@dataclass(frozen=True)
class Architecture:
    model_type: str
    hf_class: str
    # llama.cpp reorders Q/K rows per head for its interleaved (non-NEOX) RoPE
    permuted_qk: bool
    # llama.cpp stores Gemma's RMSNorm scale as 1 + weight (its norms multiply by the weight)
    norm_offset: float
    # sets the config.json keys beyond the common ones (qwen3 has none)
    extra: Callable[[_Keys, Mapping[str, _Module], dict[str, Any]], None] | None = None
    # tensors besides the modules' that hold RoPE factors
    rope_tensors: tuple[str, ...] = ()


def _common(k: _Keys, modules: Mapping[str, _Module], arch: Architecture) -> dict[str, Any]:
    if k.get("expert_count", 0):
        raise ConfigError(f"mixture-of-experts models ({k.arch}.expert_count) are not supported")
    hidden, heads = k.int("embedding_length"), k.int("attention.head_count")
    head_dim = k.int("attention.key_length", hidden // heads)
    if k.int("attention.value_length", head_dim) != head_dim:
        raise ConfigError(f"{k.arch}.attention.value_length differs from the key length")
    if "token_embd" not in modules:
        raise ConfigError("the file has no token_embd.weight tensor")
    config: dict[str, Any] = {
        "architectures": [arch.hf_class],
        "model_type": arch.model_type,
        "hidden_size": hidden,
        "num_hidden_layers": k.int("block_count"),
        "intermediate_size": k.int("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": k.int("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": k.float("attention.layer_norm_rms_epsilon"),
        "rope_theta": k.float("rope.freq_base", 10000.0),
        "max_position_embeddings": k.int("context_length", 4096),
        "vocab_size": modules["token_embd"].weight.shape[0],
        "tie_word_embeddings": "output" not in modules,
    }
    if arch.model_type != "phi3" and k.int("rope.dimension_count", head_dim) != head_dim:
        raise ConfigError(f"{k.arch}.rope.dimension_count differs from the head size")
    kind = k.get("rope.scaling.type", "none")
    if kind == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": k.float("rope.scaling.factor")}
    elif kind not in ("none", None) and not (kind == "longrope" and arch.model_type == "phi3"):
        raise ConfigError(f"{k.arch}.rope.scaling.type = {kind!r} is not supported (only linear)")
    return config


def _head_dim_is_hidden_over_heads(config: dict[str, Any]) -> None:
    if config["head_dim"] * config["num_attention_heads"] != config["hidden_size"]:
        raise ConfigError(
            f"{config['model_type']}: attention.key_length is not embedding_length / head_count"
        )


def _llama(k: _Keys, modules: Mapping[str, _Module], config: dict[str, Any]) -> None:
    config["attention_bias"] = modules["blk.0.attn_q"].bias is not None
    config["mlp_bias"] = False
    if _ROPE_FREQS in modules:
        config["rope_scaling"] = _llama3_scaling(
            _values(modules[_ROPE_FREQS]), config["rope_theta"], config["head_dim"]
        )


def _qwen2(k: _Keys, modules: Mapping[str, _Module], config: dict[str, Any]) -> None:
    _head_dim_is_hidden_over_heads(config)


def _gemma_scale(config: dict[str, Any], big_layers: int) -> float:
    # llama.cpp's (and gemma_pytorch's) query scale: by the head size, except for the 27B
    # models, which it knows by their layer count, scaled by hidden / heads.
    if config["num_hidden_layers"] == big_layers:
        return float(config["hidden_size"] // config["num_attention_heads"])
    return float(config["head_dim"])


def _gemma2(k: _Keys, modules: Mapping[str, _Module], config: dict[str, Any]) -> None:
    # The defaults are llama.cpp's, for files that lack the keys.
    config["attn_logit_softcapping"] = k.float("attn_logit_softcapping", 50.0)
    config["final_logit_softcapping"] = k.float("final_logit_softcapping", 30.0)
    config["query_pre_attn_scalar"] = _gemma_scale(config, 46)
    config["sliding_window"] = k.int("attention.sliding_window", 4096)


def _gemma3(k: _Keys, modules: Mapping[str, _Module], config: dict[str, Any]) -> None:
    if k.get("final_logit_softcapping", 0.0):
        raise ConfigError("gemma3.final_logit_softcapping is set; mlx-lm's gemma3 has none")
    config["query_pre_attn_scalar"] = _gemma_scale(config, 62)
    config["rope_local_base_freq"] = k.float("rope.freq_base_swa", 10000.0)
    window = k.get("attention.sliding_window", 0)
    if window:
        config["sliding_window"] = int(window)
        config["sliding_window_pattern"] = _period(
            k.get("attention.sliding_window_pattern", 6), config["num_hidden_layers"]
        )
    else:
        config["sliding_window_pattern"] = 1  # no sliding-window layers


def _period(pattern: Any, layers: int) -> int:
    """mlx-lm's sliding_window_pattern: every ``p``-th layer attends globally, the rest slide.

    llama.cpp's is that number (6 unless stored; 0: all slide) or one flag per layer.
    """
    if isinstance(pattern, int) and not isinstance(pattern, bool):
        return pattern or layers + 1
    flags = list(pattern) if isinstance(pattern, list) else []
    for p in range(1, layers + 2):
        if len(flags) == layers and all(bool(f) == ((i + 1) % p != 0) for i, f in enumerate(flags)):
            return p
    raise ConfigError(
        f"gemma3.attention.sliding_window_pattern = {pattern!r} is not every n-th layer global"
    )


def _phi3(k: _Keys, modules: Mapping[str, _Module], config: dict[str, Any]) -> None:
    _head_dim_is_hidden_over_heads(config)
    config["partial_rotary_factor"] = (
        k.int("rope.dimension_count", config["head_dim"]) / config["head_dim"]
    )
    config["original_max_position_embeddings"] = k.int(
        "rope.scaling.original_context_length", config["max_position_embeddings"]
    )
    if (_ROPE_LONG in modules) != (_ROPE_SHORT in modules):
        raise ConfigError(f"only one of {_ROPE_LONG} and {_ROPE_SHORT} is in the file")
    if _ROPE_LONG in modules:
        config["rope_scaling"] = {
            "type": "longrope",
            "long_factor": _values(modules[_ROPE_LONG]),
            "short_factor": _values(modules[_ROPE_SHORT]),
        }


ARCHITECTURES = {
    "llama": Architecture("llama", "LlamaForCausalLM", True, 0.0, _llama, (_ROPE_FREQS,)),
    "qwen2": Architecture("qwen2", "Qwen2ForCausalLM", False, 0.0, _qwen2),
    "qwen3": Architecture("qwen3", "Qwen3ForCausalLM", False, 0.0),
    "gemma2": Architecture("gemma2", "Gemma2ForCausalLM", False, 1.0, _gemma2),
    "gemma3": Architecture("gemma3_text", "Gemma3ForCausalLM", False, 1.0, _gemma3),
    "phi3": Architecture("phi3", "Phi3ForCausalLM", False, 0.0, _phi3, (_ROPE_LONG, _ROPE_SHORT)),
}


def _values(m: _Module) -> list[float]:
    return cast("list[float]", m.weight.floats(mx.float32).tolist())


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


def _group(tensors: Mapping[str, RawTensor]) -> dict[str, _Module]:
    parts: dict[str, dict[str, RawTensor]] = {}
    for name, t in tensors.items():
        base, _, kind = name.rpartition(".")
        if kind not in ("weight", "bias"):
            raise ConfigError(f"tensor {name} is neither a weight nor a bias")
        parts.setdefault(base, {})[kind] = t
    out = {}
    for base, p in parts.items():
        if "weight" not in p:
            raise ConfigError(f"tensor {base}.bias has no {base}.weight")
        out[base] = _Module(p["weight"], p.get("bias"))
    return out


def native_dtype(tensors: Mapping[str, RawTensor]) -> str:
    """The precision of a file's matrices: float32 if all float ones are, else float16.

    Norms are float32 in every GGUF file, so only 2-D float tensors count; quantized blocks
    carry float16 scales.
    """
    floats = [t.type for t in tensors.values() if t.type in FLOATS and len(t.shape) == 2]
    return "float32" if floats and all(t == Q.F32 for t in floats) else "float16"


def architecture(meta: Mapping[str, Any]) -> Architecture:
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"general.architecture = {arch!r} is not supported; ftx convert reads "
            + ", ".join(ARCHITECTURES)
            + " (mistral files are llama)"
        )
    return ARCHITECTURES[arch]


def to_mlx(
    tensors: Mapping[str, RawTensor], meta: Mapping[str, Any], dequantize: bool, dtype: str
) -> MLXModel:
    """Renames, un-permutes, un-shifts and (where need be) dequantizes the tensors of a GGUF
    file of one of ``ARCHITECTURES``.

    ``dtype`` (float16, bfloat16 or float32) is that of every float tensor written, including
    the scales and biases of quantized ones.
    """
    name = str(meta.get("general.architecture"))
    arch = architecture(meta)
    modules = _group(tensors)
    unknown = sorted(
        n for n in modules if n not in arch.rope_tensors and hf_module(n, name) is None
    )
    if unknown:
        raise ConfigError(f"tensors with no {name} counterpart: {', '.join(unknown[:5])}")
    keys = _Keys(meta, name)
    config = _common(keys, modules, arch)
    if arch.extra is not None:
        arch.extra(keys, modules, config)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    target = getattr(mx, dtype)
    weights: dict[str, mx.array] = {}
    bits: dict[str, int] = {}
    kinds: Counter[str] = Counter()
    parameters = 0
    for gname, m in modules.items():
        if gname in arch.rope_tensors:
            continue
        path = hf_module(gname, name)
        assert path is not None
        parameters += m.weight.size + (m.bias.size if m.bias else 0)
        heads = None
        if arch.permuted_qk and gname.endswith(("attn_q", "attn_k")):
            heads = config["num_attention_heads" if gname.endswith("q") else "num_key_value_heads"]
        if m.bias is not None:
            bias = m.bias.floats(mx.float32)
            weights[f"{path}.bias"] = (bias if heads is None else unpermute_qk(bias, heads)).astype(
                target
            )
        t = m.weight
        b = t.kept_bits
        if b is not None and not dequantize:
            kinds[f"q{b}"] += 1
            bits[path] = b
            w, scales, biases = t.blocks()
            if heads is not None:
                w, scales, biases = (unpermute_qk(a, heads) for a in (w, scales, biases))
            weights[f"{path}.weight"] = w
            weights[f"{path}.scales"] = scales.astype(target)
            weights[f"{path}.biases"] = biases.astype(target)
            continue
        if t.type in FLOATS:
            kinds[_SHORT[t.type]] += 1
        else:
            source = f"q{b}" if b is not None else t.type.name.lower()
            kinds[f"{source}->{DTYPES[dtype]}"] += 1
        # float32 until the end: un-shifting a half-precision norm would round twice
        full = t.floats(mx.float32)
        if heads is not None:
            full = unpermute_qk(full, heads)
        if arch.norm_offset and gname.endswith("norm"):
            full = full - arch.norm_offset
        weights[f"{path}.weight"] = full.astype(target)
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

"""Tiny models of real mlx-lm architectures with random weights and the example tokenizer, and
prepared artifacts of random records, for the trainer tests and the training benchmark; a GGUF read
back under mlx-lm names, for the export tests.

A plain module, not the conftest: ``from conftest import`` resolves to whichever conftest
pytest imported first when the whole suite runs.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ftx import _core

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKENIZER = EXAMPLES / "models" / "tiny-chatml"


def vocab_size(tokenizer_dir: Path = TOKENIZER) -> int:
    """Largest token id of the tokenizer (vocabulary and added tokens) plus one."""
    t = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = [*t["model"]["vocab"].values(), *(a["id"] for a in t["added_tokens"])]
    return max(ids) + 1


def build_model(
    folder: Path, arch: str = "llama", bits: int | None = None, seed: int = 0, **over: Any
) -> Path:
    """A model folder mlx-lm loads: config.json, model.safetensors, the example tokenizer."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    config: dict[str, Any] = {
        "model_type": arch,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": vocab_size(),
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "max_position_embeddings": 2048,
        **over,
    }
    module = importlib.import_module(f"mlx_lm.models.{arch}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    if bits is not None:
        nn.quantize(model, group_size=64, bits=bits)
        config["quantization"] = {"group_size": 64, "bits": bits}
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for f in TOKENIZER.iterdir():
        shutil.copy(f, folder / f.name)
    return folder


def shard(folder: Path, parts: int = 2) -> Path:
    """Splits ``folder``'s model.safetensors into ``parts`` shards and their
    ``model.safetensors.index.json``, as Hugging Face ships large models (the embedding in the
    first shard, the head in the last)."""
    import mlx.core as mx

    weights = mx.load(str(folder / "model.safetensors"))
    names = sorted(weights, key=lambda n: (not n.startswith("model.embed"), n == "lm_head.weight"))
    weight_map = {}
    for k in range(parts):
        shard_name = f"model-{k + 1:05d}-of-{parts:05d}.safetensors"
        chunk = names[k * len(names) // parts : (k + 1) * len(names) // parts]
        mx.save_safetensors(str(folder / shard_name), {n: weights[n] for n in chunk})
        weight_map |= dict.fromkeys(chunk, shard_name)
    (folder / "model.safetensors").unlink()
    index = {"metadata": {"total_size": sum(w.nbytes for w in weights.values())}}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({**index, "weight_map": weight_map}), encoding="utf-8"
    )
    return folder


def write_lora_run(
    folder: Path,
    base: Path,
    keys: tuple[str, ...] = ("self_attn.q_proj", "mlp.down_proj"),
    kind: str = "lora",
) -> Path:
    """A run folder as ``ftx train`` writes it (``save_adapters``), LoRA (or ``kind="dora"``)
    on ``keys`` of every layer, with B matrices made non-zero so the adapter changes the
    model (and DoRA's magnitudes moved off the base's row norms)."""
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    from ftx.training.model import save_adapters

    model, _ = load_model(base)
    model.freeze()
    params = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": list(keys)}
    mx.random.seed(3)  # before the LoRA layers draw their A matrices
    linear_to_lora_layers(model, len(model.layers), params, use_dora=kind == "dora")
    for layer in model.layers:
        for key in keys:
            lora = layer
            for part in key.split("."):
                lora = getattr(lora, part)
            lora.lora_b = 0.05 * mx.random.normal(lora.lora_b.shape)
            if kind == "dora":
                lora.m = lora.m * (1.0 + 0.2 * mx.random.uniform(shape=lora.m.shape))
    config = {"fine_tune_type": kind, "num_layers": len(model.layers), "lora_parameters": params}
    save_adapters(model, folder, config)
    return folder


def write_artifact(
    out: Path,
    model: Path,
    sizes: dict[str, int],
    seed: int = 0,
    lengths: tuple[int, int] = (8, 120),
) -> Path:
    """A prepared artifact in ftx's layout with random records of ``lengths`` tokens (from, up
    to): masks train a random tail."""
    import hashlib

    rng = np.random.default_rng(seed)
    sha = hashlib.sha256((model / "tokenizer.json").read_bytes()).hexdigest()
    manifest: dict[str, Any] = {
        "format": "ftx-prepared",
        "provenance": "tests",
        "tokenizer": {"sha256": sha},
        "splits": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        sized = rng.integers(*lengths, n)
        tokens = rng.integers(3, vocab_size(), int(sized.sum())).astype(np.uint32)
        mask = np.zeros(len(tokens), np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sized)]).astype(np.uint64)
        for a, b in itertools.pairwise(offsets):
            mask[int(a) + int(rng.integers(2, b - a - 2)) : int(b)] = 1
        files = {}
        for name, arr in (("tokens", tokens), ("mask", mask), ("offsets", offsets)):
            files[name] = f"{split}.{name}.npy"
            np.save(out / files[name], arr)
        manifest["splits"][split] = {
            "records": n,
            "tokens": len(tokens),
            "trained_tokens": int(mask.sum()),
            "files": files,
        }
    return seal(out, manifest)


def seal(out: Path, manifest: dict[str, Any]) -> Path:
    """Writes ``manifest`` with the size and digest of every array it names, as ``ftx prepare``
    records them (for artifacts a test writes or edits by hand)."""
    for split in manifest["splits"].values():
        split["checks"] = {}
        for name, file in split["files"].items():
            size, digest = _core.file_digest(out / file)
            split["checks"][name] = {"bytes": size, "xxh3": digest}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


@contextlib.contextmanager
def llama_cpp_model(path: Path, n_ctx: int) -> Iterator[Any]:
    """A GGUF opened by llama.cpp itself (llama-cpp-python) with every position's logits kept
    and its KV cache in float32 too (its default is float16), closed on exit."""
    import llama_cpp

    f32 = llama_cpp.GGML_TYPE_F32
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=2,
        logits_all=True,
        verbose=False,
        type_k=f32,
        type_v=f32,
    )
    try:
        yield llm
    finally:
        llm.close()


def gguf_as_mlx(path: Path, base: Path) -> dict[str, Any]:
    """The GGUF's tensors under the base model's mlx-lm names, dequantized, with llama's Q/K rows
    unpermuted."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model

    from ftx.gguf.names import unpermute_qk
    from ftx.gguf.write import gguf_name

    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    model, _ = load_model(base)
    loaded = mx.load(str(path))
    assert isinstance(loaded, dict)
    out = {}
    for mname, _ in tree_flatten(model.parameters()):
        gname = gguf_name(mname)
        if gname not in loaded:  # output.weight of a model with tied embeddings
            continue
        stem = gname.rsplit(".", 1)[0]
        w = loaded[gname]
        if f"{stem}.scales" in loaded:  # mx.load gives Q8_0 as 8-bit affine, groups of 32
            w = mx.dequantize(w, loaded[f"{stem}.scales"], loaded[f"{stem}.biases"], 32, 8)
        w = np.array(w.astype(mx.float32))
        if config["model_type"] == "llama" and stem.endswith((".attn_q", ".attn_k")):
            heads = config["num_attention_heads" if stem.endswith("q") else "num_key_value_heads"]
            w = unpermute_qk(w, heads)
        out[mname] = mx.array(w)
    return out

"""`ftx fuse --format gguf` read by llama.cpp itself (llama-cpp-python; `make llamacpp`, not in
CI: it compiles for ~40 minutes): for a byte-level BPE and a SentencePiece vocabulary, in F16
and Q8_0, llama.cpp tokenizes as the model's tokenizer does, its logits are within a stated
tolerance of MLX's on the fused model, and its greedy tokens are MLX's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import build_model, gguf_as_mlx, llama_cpp_model, write_lora_run

llama_cpp = pytest.importorskip("llama_cpp")
mx = pytest.importorskip("mlx.core")

PROMPT = "The capital of France is Paris. It lies on the river Seine, 42 km from 1,000 lakes."
GREEDY = 8
# Largest |logit difference| allowed against MLX's float32 model: F16 rounds each weight to 11
# bits, Q8_0 to 8 bits per block of 32.
TOLERANCE = {"f16": 0.01, "q8_0": 0.15}
MISTRAL = Path("tokenizers/mistral/hf_mistral_7b_v0.1")


@pytest.fixture(scope="module", params=["byte-level BPE", "SentencePiece"])
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gguf-base")
    if request.param == "byte-level BPE":
        return build_model(root / "bpe")
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (shared / MISTRAL).is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    folder = build_model(root / "spm", vocab_size=32000, tie_word_embeddings=True)
    for f in folder.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            f.unlink()
    for f in (shared / MISTRAL).glob("tokenizer*.json"):
        shutil.copy(f, folder / f.name)
    return folder


def _ids(folder: Path) -> list[int]:
    from tokenizers import Tokenizer

    return list(Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROMPT).ids)


def _logits(model: Any, ids: list[int]) -> np.ndarray:
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


def _greedy(model: Any, ids: list[int]) -> list[int]:
    seq = list(ids)
    for _ in range(GREEDY):
        seq.append(int(np.argmax(_logits(model, seq)[-1])))
    return seq[len(ids) :]


def _llama(path: Path, ids: list[int]) -> tuple[list[int], np.ndarray, list[int]]:
    with llama_cpp_model(path, n_ctx=128) as llm:
        add_bos = bool(llm.metadata.get("tokenizer.ggml.add_bos_token") == "true")
        tokens = llm.tokenize(PROMPT.encode(), add_bos=add_bos, special=False)
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        llm.reset()
        greedy: list[int] = []
        for t in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, reset=True):
            greedy.append(int(t))
            if len(greedy) == GREEDY:
                break
        return tokens, logits, greedy


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_llama_cpp_reads_the_fused_gguf_as_mlx_computes_it(
    base: Path, tmp_path: Path, kind: str
) -> None:
    from ftx.export import FuseOptions, fuse

    run = write_lora_run(tmp_path / "run", base)
    fuse(base, run, tmp_path / "mlx", FuseOptions(dtype="float32"))
    opts = FuseOptions(format="gguf", quantize=8 if kind == "q8_0" else None)
    fuse(base, run, tmp_path / "gguf", opts)
    [path] = (tmp_path / "gguf").glob("*.gguf")
    assert path.name == f"model-{kind}.gguf"
    from mlx_lm.utils import load_model

    ids = _ids(base)
    tokens, logits, greedy = _llama(path, ids)
    assert tokens == ids, "llama.cpp tokenizes the prompt as the model's tokenizer does"
    # MLX on the float32 fused model, and on the weights the file holds (Q8_0 dequantized)
    fused, _ = load_model(tmp_path / "mlx")
    held, _ = load_model(base)
    held.load_weights(list(gguf_as_mlx(path, base).items()))
    diff = float(np.abs(logits - _logits(fused, ids)).max())
    info: dict[str, Any] = {
        "kind": kind,
        "tokens": len(ids),
        "max_abs_logit_diff_vs_fused": diff,
        "max_abs_logit_diff_vs_file_weights": float(np.abs(logits - _logits(held, ids)).max()),
    }
    print(json.dumps(info))
    assert diff <= TOLERANCE[kind], info
    if kind == "f16":
        assert greedy == _greedy(fused, ids)
    else:
        # llama.cpp's Q8_0 products quantize the activations too: where MLX's two best tokens
        # are closer than that error a tie may go either way, so each of llama.cpp's greedy
        # tokens is MLX's best or within the tolerance of it, given the same prefix
        seq = ids + greedy
        steps = _logits(held, seq)[len(ids) - 1 : -1]
        for step, chosen in zip(steps, greedy, strict=True):
            assert step[chosen] >= step.max() - TOLERANCE[kind], info
        info["greedy_equal"] = sum(
            int(np.argmax(s)) == c for s, c in zip(steps, greedy, strict=True)
        )
        print(json.dumps(info))

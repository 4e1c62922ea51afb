"""Quantized bases: QLoRA, quantize on load, and the CPU choice to train against a float copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftx.config import validate

pytestmark = pytest.mark.mlx

Make = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def llama4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_model

    return build_model(tmp_path_factory.mktemp("q") / "llama4", bits=4)


def quantized_linears(keys: dict[str, Any]) -> tuple[int, Any]:
    import mlx.nn as nn

    from ftx.training.model import adapt, load_base

    cfg = validate(keys)
    model, base = load_base(cfg)
    adapt(model, cfg)
    n = sum(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
    return n, base


def test_a_quantized_base_trains_as_qlora_when_kept(make_config: Make, llama4: Path) -> None:
    from ftx import train

    n, base = quantized_linears(make_config(model=llama4, dequantize_base="never"))
    assert n > 0 and base.quantized_bits == (4,) and not base.dequantized
    r = train(make_config(model=llama4, dequantize_base="never", iters=2, save_every=None))
    assert "kept quantized (QLoRA)" in r.base and r.train_loss is not None


def test_on_cpu_a_quantized_base_is_dequantized_and_the_summary_says_so(
    make_config: Make, llama4: Path
) -> None:
    import mlx.core as mx

    from ftx import train

    if mx.default_device() != mx.cpu:
        pytest.skip("the automatic choice differs on a GPU")
    n, base = quantized_linears(make_config(model=llama4))
    assert n == 0 and base.dequantized and base.compute_dtype == "float32"
    keys = make_config(model=llama4, iters=2, save_every=None)
    r = train(keys)
    assert "4-bit, dequantized to float32" in r.base
    assert r.blas  # which BLAS computed, in the same summary

    # The adapter still belongs to the quantized model: mlx-lm applies it there.
    from mlx_lm import generate, load

    model, tokenizer = load(str(llama4), adapter_path=str(keys["out"]))
    assert isinstance(generate(model, tokenizer, "hi", max_tokens=2), str)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_on_load(bits: int, make_config: Make) -> None:
    n, base = quantized_linears(make_config(quantize=bits, dequantize_base="never"))
    assert n > 0 and base.quantized_bits == (bits,)


def test_quantize_refuses_an_already_quantized_base(make_config: Make, llama4: Path) -> None:
    from ftx import train
    from ftx.errors import ConfigIssues

    with pytest.raises(ConfigIssues, match="already quantized"):
        train(make_config(model=llama4, quantize=8))

"""Each LoRA/DoRA/full setting changes what is trained: names, shapes, counts and the update."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftx.config import validate

pytestmark = pytest.mark.mlx

Make = Callable[..., dict[str, Any]]


def trainable(keys: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    from ftx.training.model import adapt, load_base, trainable_parameters

    cfg = validate(keys)
    model, _ = load_base(cfg)
    adapt(model, cfg)
    return {k: tuple(v.shape) for k, v in trainable_parameters(model).items()}


def one_sgd_step(keys: dict[str, Any]) -> dict[str, Any]:
    """Trainable weights after one plain SGD step (no clipping), which shows the update."""
    import mlx.core as mx

    from ftx import train

    keys = {
        **keys,
        "iters": 1,
        "optimizer": "sgd",
        "schedule": "constant",
        "max_grad_norm": None,
        "learning_rate": 0.1,
        "save_every": None,
    }
    train(keys)
    return dict(mx.load(str(Path(keys["out"]) / "adapters.safetensors")))  # type: ignore[arg-type]


def test_lora_trains_only_low_rank_matrices_of_all_blocks(make_config: Make) -> None:
    names = trainable(make_config())
    assert names and all(k.rsplit(".", 1)[-1] in {"lora_a", "lora_b"} for k in names)
    assert {k.split(".")[2] for k in names} == {"0", "1"}  # both blocks of the tiny model
    assert {k.split(".")[-2] for k in names} >= {"q_proj", "v_proj", "down_proj"}


def test_rank_sets_the_shapes(make_config: Make) -> None:
    r4, r8 = trainable(make_config(rank=4)), trainable(make_config(rank=8))
    assert r4.keys() == r8.keys()
    for k in r4:
        if k.endswith("lora_a"):
            assert r4[k][1] == 4 and r8[k][1] == 8
        else:
            assert r4[k][0] == 4 and r8[k][0] == 8
    assert 2 * sum(map(_size, r4.values())) == sum(map(_size, r8.values()))


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_alpha_and_rslora_set_the_scale_of_the_update(make_config: Make, tmp_path: Path) -> None:
    import json

    import mlx.core as mx

    runs = {
        "alpha16": {"alpha": 16.0},
        "alpha32": {"alpha": 32.0},
        "rslora": {"alpha": 16.0, "rslora": True},
    }
    after = {}
    for name, over in runs.items():
        keys = make_config(out=tmp_path / name, rank=4, **over)
        after[name] = one_sgd_step(keys)
        scale = json.loads((tmp_path / name / "adapter_config.json").read_text())
        assert scale["lora_parameters"]["scale"] == pytest.approx(
            16.0 / 2 if name == "rslora" else over["alpha"] / 4
        )
    # B starts at zero; its gradient is proportional to the scale, so is its SGD update.
    b = next(k for k in after["alpha16"] if k.endswith("lora_b"))
    ratio = mx.abs(after["alpha32"][b]).sum() / mx.abs(after["alpha16"][b]).sum()
    assert ratio.item() == pytest.approx(2.0, rel=1e-3)
    ratio = mx.abs(after["rslora"][b]).sum() / mx.abs(after["alpha16"][b]).sum()
    assert ratio.item() == pytest.approx(2.0, rel=1e-3)  # 16/sqrt(4) = 8 vs 16/4 = 4


def test_dropout_changes_the_update(make_config: Make, tmp_path: Path) -> None:
    import mlx.core as mx

    plain = one_sgd_step(make_config(out=tmp_path / "a"))
    dropped = one_sgd_step(make_config(out=tmp_path / "b", dropout=0.5))
    again = one_sgd_step(make_config(out=tmp_path / "c", dropout=0.5))
    b = next(k for k in plain if k.endswith("lora_b"))
    assert not mx.allclose(plain[b], dropped[b])
    assert mx.array_equal(dropped[b], again[b])  # seeded


def test_target_modules_and_num_layers_choose_the_layers(make_config: Make) -> None:
    names = trainable(make_config(target_modules=["self_attn.q_proj"]))
    assert {k.rsplit(".", 1)[0].split(".", 3)[-1] for k in names} == {"self_attn.q_proj"}
    last = trainable(make_config(num_layers=1))
    assert {k.split(".")[2] for k in last} == {"1"}
    assert len(last) * 2 == len(trainable(make_config()))


def test_unknown_target_module_is_refused_before_loading(make_config: Make) -> None:
    from ftx import train
    from ftx.errors import ConfigIssues

    with pytest.raises(ConfigIssues, match="target_modules"):
        train(make_config(target_modules=["self_attn.nope"]))


def test_lora_plus_gives_b_its_own_learning_rate(make_config: Make, tmp_path: Path) -> None:
    import mlx.core as mx

    base = one_sgd_step(make_config(out=tmp_path / "a"))
    plus = one_sgd_step(make_config(out=tmp_path / "b", lora_plus_ratio=4.0))
    for k in base:
        if k.endswith("lora_b"):
            assert mx.allclose(plus[k], 4 * base[k], rtol=1e-4, atol=1e-7)
        else:  # A has no gradient while B is zero: both runs keep their (same) init
            assert mx.array_equal(plus[k], base[k])


def test_dora_also_trains_magnitudes(make_config: Make) -> None:
    lora, dora = trainable(make_config()), trainable(make_config(method="dora"))
    mags = {k for k in dora if k.endswith(".m")}
    assert mags and set(dora) - mags == set(lora)
    for k in mags:
        assert len(dora[k]) == 1


def test_full_fine_tuning_trains_the_blocks_themselves(make_config: Make, tmp_path: Path) -> None:
    import mlx.core as mx
    from tiny_models import build_model

    names = trainable(make_config(method="full"))
    assert not any("lora" in k for k in names)
    assert any(k.endswith("self_attn.q_proj.weight") for k in names)
    assert any(k.endswith("input_layernorm.weight") for k in names)
    assert not any("embed_tokens" in k for k in names)
    after = one_sgd_step(make_config(method="full", out=tmp_path / "full"))
    assert set(after) == set(names)
    base = mx.load(str(build_model(tmp_path / "same-init") / "model.safetensors"))
    k = next(k for k in after if k.endswith("q_proj.weight"))
    assert not mx.allclose(after[k], base[k])  # type: ignore[index]

"""The loss: packed rows compute exactly what records alone compute (loss and gradients), the
vocabulary projection runs only at trained positions, and a step's loss is the mean over all
of its trained tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ftx.config import validate
from ftx.data import load_dataset
from ftx.training.batching import make_batch
from ftx.training.metrics import read_metrics

pytestmark = pytest.mark.mlx

Make = Callable[..., dict[str, Any]]


def lora_model(keys: dict[str, Any]) -> Any:
    """A LoRA model whose B matrices are random, so the adapters take part in the output."""
    import mlx.core as mx
    from mlx.utils import tree_map_with_path

    from ftx.training.model import adapt, load_base

    cfg = validate(keys)
    model, _ = load_base(cfg)
    adapt(model, cfg)
    key = mx.random.key(5)
    params = tree_map_with_path(
        lambda p, v: mx.random.normal(v.shape, key=key) * 0.05 if p.endswith("lora_b") else v,
        model.trainable_parameters(),
    )
    model.update(params)
    model.eval()
    return model


def loss_and_grads(model: Any, batch: Any, packed: bool) -> tuple[float, dict[str, Any]]:
    import mlx.core as mx
    import mlx.nn as nn

    from ftx.training.forward import Forward
    from ftx.training.model import flatten
    from ftx.training.trainer import _arrays

    forward = Forward(model, packed)
    fn = nn.value_and_grad(model, forward.loss)
    loss, grads = fn(*_arrays(batch), mx.array(1.0))
    mx.eval(loss, grads)
    return loss.item(), dict(flatten(grads))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_packed_batch_equals_its_records_one_by_one(
    arch: str, make_config: Make, prepared: Path, tmp_path: Path
) -> None:
    from tiny_models import build_model

    model_dir = build_model(tmp_path / arch, arch=arch)
    model = lora_model(make_config(model=model_dir))
    ds = load_dataset(prepared, "train")
    rows = [[0, 1, 2], [3, 4]]
    packed = make_batch(ds, rows, budget=512, packing=True)
    assert packed.inputs.shape[0] == 2  # several records really share each row
    loss, grads = loss_and_grads(model, packed, packed=True)

    alone_loss, alone_grads = 0.0, {k: 0.0 for k in grads}
    for i in [i for row in rows for i in row]:
        one = make_batch(ds, [[i]], budget=512, packing=False)
        part, g = loss_and_grads(model, one, packed=False)
        alone_loss += part
        alone_grads = {k: alone_grads[k] + g[k] for k in grads}
    assert loss == pytest.approx(alone_loss, rel=1e-5)
    for k, g in grads.items():
        want = np.array(alone_grads[k])
        # float32 sums in another order: off by rounding relative to the largest entry.
        np.testing.assert_allclose(np.array(g), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_without_the_mask_packing_would_leak(make_config: Make, prepared: Path) -> None:
    """The equality above is not vacuous: plain causal attention over the row differs."""
    model = lora_model(make_config())
    ds = load_dataset(prepared, "train")
    packed = make_batch(ds, [[0, 1, 2]], budget=512, packing=True)
    with_mask, _ = loss_and_grads(model, packed, packed=True)
    leaking, _ = loss_and_grads(model, replace(packed, segments=None), packed=False)
    assert abs(with_mask - leaking) > 1e-3


def test_logits_are_computed_only_at_trained_positions(make_config: Make, prepared: Path) -> None:
    import mlx.core as mx
    import mlx.nn as nn

    from ftx.training.forward import Forward
    from ftx.training.trainer import _arrays

    model = lora_model(make_config())
    seen: list[tuple[int, ...]] = []

    class Recording(nn.Module):
        """The model's own head, noting the shape of what it is applied to."""

        def __init__(self, head: nn.Module) -> None:
            super().__init__()
            self.head = head

        def __call__(self, x: mx.array) -> mx.array:
            seen.append(tuple(x.shape))
            out: mx.array = self.head(x)
            return out

    full_logits = model(mx.array(make_batch(load_dataset(prepared), [[0]], 512, False).inputs))
    model.lm_head = Recording(model.lm_head)
    forward = Forward(model, packed=False)
    batch = make_batch(load_dataset(prepared), [[0]], 512, packing=False)
    loss = forward.loss(*_arrays(batch), mx.array(float(batch.trained)))
    assert seen == [(len(batch.positions), model.args.hidden_size)]
    assert len(batch.positions) < batch.inputs.size  # prompt positions are skipped
    # ... and the loss is the one full logits give at those positions.
    flat = full_logits.reshape(-1, full_logits.shape[-1])[mx.array(batch.positions)]
    ce = nn.losses.cross_entropy(flat, mx.array(batch.targets)) * mx.array(batch.weights)
    assert loss.item() == pytest.approx((ce.sum() / batch.trained).item(), rel=1e-5)


def test_a_step_is_the_mean_over_all_its_tokens_whatever_the_micro_batches(
    make_config: Make, tmp_path: Path
) -> None:
    """Two micro-batches of 2 rows accumulated = one micro-batch of the same 4 rows: same loss
    and gradient norm each step. A mean of micro-batch means would differ (unequal counts)."""
    from ftx import train

    # Rows of 64 tokens, the narrowest width: all rows have one width, so the same rows make a
    # step whatever the micro-batches.
    common = {
        "iters": 3,
        "report_every": 1,
        "save_every": None,
        "max_grad_norm": None,
        "max_seq_length": 64,
    }
    train(make_config(out=tmp_path / "accum", batch_size=2, grad_accumulation=2, **common))
    train(make_config(out=tmp_path / "whole", batch_size=4, grad_accumulation=1, **common))
    a = read_metrics(tmp_path / "accum" / "metrics.jsonl")
    b = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    for x, y in zip(
        [r for r in a if "event" not in r], [r for r in b if "event" not in r], strict=True
    ):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)


def test_clipping_bounds_the_update_and_logs_the_norm_before_it(
    make_config: Make, tmp_path: Path
) -> None:
    import mlx.core as mx

    from ftx import train

    keys = make_config(
        iters=1,
        optimizer="sgd",
        schedule="constant",
        learning_rate=1.0,
        max_grad_norm=1e-3,
        report_every=1,
        save_every=None,
    )
    train(keys)
    run = Path(keys["out"])
    logged = read_metrics(run / "metrics.jsonl")[0]["grad_norm"]
    assert logged > 1e-3
    # B started at zero, A has no gradient yet: the B weights are the whole update.
    after = mx.load(str(run / "adapters.safetensors"))
    update = sum((v.square().sum() for k, v in after.items() if k.endswith("lora_b")), mx.array(0))  # type: ignore[union-attr]
    assert mx.sqrt(update).item() == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "adafactor"])
def test_each_optimizer_trains_and_checkpoints_its_state(
    name: str, make_config: Make, tmp_path: Path
) -> None:
    import mlx.core as mx

    from ftx import train
    from ftx.training import checkpoint

    extra = {"momentum": 0.9} if name == "sgd" else {}
    keys = make_config(optimizer=name, iters=3, learning_rate=1e-2, save_every=3, **extra)
    r = train(keys)
    state = mx.load(str(checkpoint.folder(Path(keys["out"]), 3) / checkpoint.OPTIMIZER))
    leaves = {k.rsplit(".", 1)[-1] for k in state}  # type: ignore[union-attr]
    expect = {"adamw": {"m", "v"}, "adam": {"m", "v"}, "sgd": {"v"}, "adafactor": set()}[name]
    assert expect <= leaves and "learning_rate" in leaves
    assert r.train_loss is not None and r.steps == 3

"""Quantizing fused weights, and measuring what it costs.

A fused delta is a small change to every weight; a 4-bit grid cannot hold most of it, so every
re-quantization is measured, layer by layer: the relative error ``|Q(W) - W| / |W|`` (Frobenius
norms) against the float fused weight, and, for merged layers, the same error over the norm of
what the adapter changed (``|Q(W) - W| / |delta|``; above 1, quantizing moved the layer further
than the fine-tune did, and only a perplexity measurement tells how much of it survived).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from ftx.export.merge import FusedLayer, QuantSpec, float_weight, quant_spec

# Above these a warning is printed (and recorded): the relative weight error of one layer, the
# relative increase of test perplexity, the error over the adapter's delta.
WEIGHT_ERROR_WARN = 0.15
PERPLEXITY_INCREASE_WARN = 0.05
DELTA_ERROR_WARN = 1.0


@dataclass(frozen=True)
class LayerError:
    name: str
    shape: tuple[int, ...]
    bits: int
    group_size: int
    relative_error: float
    delta_relative_error: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm(a: mx.array) -> float:
    return float(mx.linalg.norm(a.astype(mx.float32).reshape(-1)).item())  # type: ignore[arg-type]


def weight_error(
    name: str, before: mx.array, after: mx.array, spec: QuantSpec, delta_norm: float | None
) -> LayerError:
    err = _norm(after.astype(mx.float32) - before.astype(mx.float32))
    return LayerError(
        name,
        tuple(before.shape),
        spec.bits,
        spec.group_size,
        err / max(_norm(before), 1e-30),
        err / delta_norm if delta_norm else None,
    )


def quantize_layers(
    model: nn.Module, plan: dict[str, QuantSpec], fused: list[FusedLayer]
) -> list[LayerError]:
    """Quantizes the named float layers as planned; returns each layer's error."""
    deltas = {f.name: f.delta_norm for f in fused}
    modules = dict(model.named_modules())
    swapped: list[tuple[str, nn.Module]] = []
    errors: list[LayerError] = []
    for name, spec in plan.items():
        layer = modules[name]
        q = layer.to_quantized(group_size=spec.group_size, bits=spec.bits, mode=spec.mode)
        errors.append(weight_error(name, layer.weight, float_weight(q), spec, deltas.get(name)))
        swapped.append((name, q))
    if swapped:
        model.update_modules(tree_unflatten(swapped))
    mx.eval(model.parameters())
    return errors


def plan_all(model: nn.Module, spec: QuantSpec) -> dict[str, QuantSpec]:
    """Every float layer that can be quantized at this group size (mlx-lm convert's rule)."""
    return {
        name: spec
        for name, m in model.named_modules()
        if hasattr(m, "to_quantized")
        and quant_spec(m) is None
        and m.weight.shape[-1] % spec.group_size == 0
    }


def plan_restore(fused: list[FusedLayer]) -> dict[str, QuantSpec]:
    """The merged layers whose base was quantized, back to the base's own setting."""
    return {f.name: f.base_quant for f in fused if f.base_quant is not None}


def warnings_for(errors: list[LayerError], perplexity_change: float | None) -> list[str]:
    out = []
    worst = max(errors, key=lambda e: e.relative_error, default=None)
    if worst is not None and worst.relative_error > WEIGHT_ERROR_WARN:
        n = sum(e.relative_error > WEIGHT_ERROR_WARN for e in errors)
        out.append(
            f"{n} layer(s) have a relative weight error above {WEIGHT_ERROR_WARN:.0%} "
            f"(worst {worst.name}: {worst.relative_error:.1%})"
        )
    drowned = [e for e in errors if (e.delta_relative_error or 0.0) > DELTA_ERROR_WARN]
    if drowned:
        out.append(
            f"{len(drowned)} of {sum(e.delta_relative_error is not None for e in errors)} merged "
            "layer(s) were moved by quantization more than by the adapter: part of the "
            "fine-tune may be lost (measure with --data; or use --dequantize, or --quantize 8)"
        )
    if perplexity_change is not None and perplexity_change > PERPLEXITY_INCREASE_WARN:
        out.append(
            f"test perplexity rises by {perplexity_change:.1%} over the float fused model "
            f"(threshold {PERPLEXITY_INCREASE_WARN:.0%})"
        )
    return out

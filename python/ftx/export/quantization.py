"""Quantizing fused weights, and measuring what it costs.

A fused delta is a small change to every weight; a 4-bit grid cannot hold most of it, so every
re-quantization is measured, layer by layer: the relative error ``|Q(W) - W| / |W|`` (Frobenius
norms) against the float fused weight, and, for merged layers, the same error over the norm of
what the adapter changed (``|Q(W) - W| / |delta|``): 0 keeps the fine-tune intact, 1 is as far
from the fused weights as the base itself was (a layer rounded back onto its base codes), above 1
quantizing moved the layer further than the fine-tune did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ftx.runtime.mlx import mx, nn

from mlx.utils import tree_unflatten

from ftx.export.merge import FusedLayer, Grid, QuantSpec, float_weight, quant_spec

# Above these a warning is printed (and recorded): the relative weight error of one layer, the
# relative increase of test perplexity, the error over the adapter's delta.
WEIGHT_ERROR_WARN = 0.15
PERPLEXITY_INCREASE_WARN = 0.05
DELTA_ERROR_WARN = 0.9
# Bit widths whose codes fill uint32 words exactly (the others straddle words).
PACKED_BITS = (2, 4, 8)


@dataclass(frozen=True)
class LayerError:
    name: str
    shape: tuple[int, ...]
    bits: int
    group_size: int
    relative_error: float
    delta_relative_error: float | None
    # Whether the base's own scales and biases were kept (``on_base_grid``).
    base_grid: bool = False

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


def pack_codes(codes: mx.array, bits: int) -> mx.array:
    """Integer codes (rows, n) into MLX's packed uint32 layout: ``32 / bits`` codes a word,
    the first in the lowest bits."""
    per = 32 // bits
    rows, n = codes.shape
    fields = codes.astype(mx.uint32).reshape(rows, n // per, per)
    shifts = mx.arange(per, dtype=mx.uint32) * bits
    # The bit fields do not overlap, so their sum is their bitwise or.
    packed: mx.array = (fields << shifts).sum(axis=-1).astype(mx.uint32)
    return packed


def on_base_grid(layer: nn.Module, grid: Grid) -> nn.Module:
    """``layer`` quantized with the base's own scales and biases: each merged weight is rounded
    to the nearest level of the base's group, so weights the adapter moved by less than half a
    step keep their base code, and no weight ends further from the merged value than the base's
    own code was (the error is at most the adapter's change, weight by weight)."""
    spec, scales, biases = grid.spec, grid.scales, grid.biases
    rows, n = layer.weight.shape
    g = spec.group_size
    w = layer.weight.astype(mx.float32).reshape(rows, n // g, g)
    s = scales.astype(mx.float32)[..., None]
    b = biases.astype(mx.float32)[..., None]
    level = mx.round((w - b) / mx.where(s == 0, 1.0, s))
    codes = mx.where(s == 0, 0.0, mx.clip(level, 0, 2**spec.bits - 1)).reshape(rows, n)
    q: nn.Module = layer.to_quantized(group_size=g, bits=spec.bits, mode=spec.mode)
    q.weight = pack_codes(codes, spec.bits)
    q.scales, q.biases = scales, biases
    return q


def quantize_layers(
    model: nn.Module,
    plan: dict[str, QuantSpec],
    fused: list[FusedLayer],
    grids: dict[str, Grid],
) -> list[LayerError]:
    """Quantizes the named float layers as planned; returns each layer's error. A layer whose
    base was quantized with the planned setting is also rounded onto the base's own levels
    (where they can be packed: 2, 4 or 8 bits), and whichever of the two is closer to the
    merged weight is kept: a layer the adapter did not touch gets its base codes back exactly,
    a merged one keeps the base's levels unless the adapter pushed weights out of range."""
    deltas = {f.name: f.delta_norm for f in fused}
    modules = dict(model.named_modules())
    swapped: list[tuple[str, nn.Module]] = []
    errors: list[LayerError] = []
    for name, spec in plan.items():
        layer = modules[name]
        fresh = layer.to_quantized(group_size=spec.group_size, bits=spec.bits, mode=spec.mode)
        err = weight_error(name, layer.weight, float_weight(fresh), spec, deltas.get(name))
        q = fresh
        grid = grids.get(name)
        if grid is not None and grid.spec == spec and spec.bits in PACKED_BITS:
            kept = on_base_grid(layer, grid)
            kept_err = weight_error(name, layer.weight, float_weight(kept), spec, deltas.get(name))
            if kept_err.relative_error <= err.relative_error:
                q, err = kept, replace(kept_err, base_grid=True)
        errors.append(err)
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


def warnings_for(errors: list[LayerError], perplexity_change: float | None) -> list[str]:
    out = []
    worst = max(errors, key=lambda e: e.relative_error, default=None)
    if worst is not None and worst.relative_error > WEIGHT_ERROR_WARN:
        n = sum(e.relative_error > WEIGHT_ERROR_WARN for e in errors)
        out.append(
            f"{n} layer(s) have a relative weight error above {WEIGHT_ERROR_WARN:.0%} "
            f"(worst {worst.name}: {worst.relative_error:.1%})"
        )
    drowned = [e for e in errors if (e.delta_relative_error or 0.0) >= DELTA_ERROR_WARN]
    if drowned:
        out.append(
            f"{len(drowned)} of {sum(e.delta_relative_error is not None for e in errors)} merged "
            f"layer(s) end up at least {DELTA_ERROR_WARN:.0%} as far from the fused weights as "
            "the adapter moved them: most of the fine-tune is lost there (--data measures the "
            "effect; without --quantize the fused model is written in float, without loss)"
        )
    if perplexity_change is not None and perplexity_change > PERPLEXITY_INCREASE_WARN:
        out.append(
            f"test perplexity rises by {perplexity_change:.1%} over the float fused model "
            f"(threshold {PERPLEXITY_INCREASE_WARN:.0%})"
        )
    return out

"""Learning-rate schedules as plain functions of the optimizer step.

They are pure Python (no MLX): the trainer evaluates one per update and writes the value into
the optimizer's state, so the compiled step never re-traces and each schedule is easy to test.
Step ``k`` is the number of updates already made; the last update is ``total - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]

# One-cycle starts its rise at peak / 25, the usual choice (Smith & Topin, 2017).
ONE_CYCLE_START = 1 / 25
# One-cycle without an explicit rise length rises for this fraction of all steps.
ONE_CYCLE_RISE = 0.3


def _cosine(p: float, low: float) -> float:
    """From 1 at ``p = 0`` down to ``low`` at ``p = 1``."""
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * p))


def build_schedule(
    name: str,
    peak: float,
    total: int,
    warmup: int = 0,
    min_ratio: float = 0.0,
    cycle: int | None = None,
) -> Schedule:
    """The learning rate of every update for schedule ``name``.

    Every schedule except one_cycle starts with ``warmup`` linear steps up to ``peak`` and decays
    over the rest to ``peak * min_ratio``; one_cycle's warmup is its cosine rise from peak / 25.
    """
    if name == "one_cycle":
        rise = warmup or max(1, round(total * ONE_CYCLE_RISE))
        fall = max(1, total - rise)

        def one_cycle(k: int) -> float:
            if k < rise:
                return peak * _cosine(1 - k / rise, ONE_CYCLE_START)
            return peak * _cosine((k - rise) / fall, min_ratio)

        return one_cycle

    decay = max(1, total - warmup)
    period = cycle or max(1, decay // 4)
    shapes: dict[str, Callable[[int], float]] = {
        "constant": lambda t: 1.0,
        "linear": lambda t: 1 - (1 - min_ratio) * t / decay,
        "cosine": lambda t: _cosine(t / decay, min_ratio),
        "cosine_restarts": lambda t: _cosine((t % period) / period, min_ratio),
    }
    if name not in shapes:
        raise ValueError(f"unknown schedule {name!r}; known: {sorted([*shapes, 'one_cycle'])}")
    shape = shapes[name]

    def schedule(k: int) -> float:
        if k < warmup:
            return peak * (k + 1) / warmup
        return peak * shape(k - warmup)

    return schedule

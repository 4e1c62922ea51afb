"""Learning-rate schedules: every shape, each with warmup."""

from __future__ import annotations

import math

import pytest

from ftx.training.schedules import ONE_CYCLE_START, build_schedule

PEAK, TOTAL, WARMUP = 1e-3, 100, 10


def lrs(name: str, **kw: float) -> list[float]:
    s = build_schedule(name, PEAK, TOTAL, **kw)  # type: ignore[arg-type]
    return [s(k) for k in range(TOTAL)]


@pytest.mark.parametrize("name", ["constant", "linear", "cosine", "cosine_restarts"])
def test_warmup_rises_linearly_to_the_peak(name: str) -> None:
    v = lrs(name, warmup=WARMUP)
    assert v[:WARMUP] == pytest.approx([PEAK * (k + 1) / WARMUP for k in range(WARMUP)])
    assert v[WARMUP] == pytest.approx(PEAK)
    assert v[0] > 0  # the first update is not wasted at lr 0


def test_constant_stays_at_the_peak() -> None:
    assert set(lrs("constant")) == {PEAK}


def test_linear_and_cosine_decay_to_the_floor() -> None:
    for name in ("linear", "cosine"):
        v = lrs(name, warmup=WARMUP, min_ratio=0.1)
        assert all(a >= b for a, b in zip(v[WARMUP:], v[WARMUP + 1 :], strict=False))
        assert PEAK * 0.1 <= v[-1] < PEAK * 0.15
    lin, cos = lrs("linear"), lrs("cosine")
    mid = TOTAL // 4
    assert lin[mid] == pytest.approx(PEAK * (1 - mid / TOTAL))
    assert cos[mid] == pytest.approx(PEAK * 0.5 * (1 + math.cos(math.pi * mid / TOTAL)))


def test_cosine_restarts_jump_back_to_the_peak_every_cycle() -> None:
    v = lrs("cosine_restarts", warmup=WARMUP, cycle=30)
    peaks = [k for k in range(WARMUP, TOTAL) if v[k] == pytest.approx(PEAK)]
    assert peaks == [10, 40, 70]
    assert v[39] < 0.01 * PEAK


def test_one_cycle_rises_from_a_fraction_of_the_peak_then_anneals() -> None:
    v = lrs("one_cycle", warmup=WARMUP)
    assert v[0] == pytest.approx(PEAK * ONE_CYCLE_START)
    assert max(v) == pytest.approx(PEAK) and v.index(max(v)) == WARMUP
    assert v[-1] < 0.01 * PEAK
    default_rise = lrs("one_cycle")
    assert default_rise.index(max(default_rise)) == 30  # 30% of the steps without a warmup


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        build_schedule("step", PEAK, TOTAL)

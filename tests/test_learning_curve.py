"""Learning-curve extrapolation: parameter recovery, cross-over ranking, fallback and clipping."""
from __future__ import annotations

import math

import pytest

from damoc.selection.learning_curve import extrapolate, fit_curve, lr_area, sane_range


def _law(e: float, b: float, alpha: float):
    return lambda t: e + b * t ** (-alpha)


def test_recovers_power_law_parameters():
    f = _law(2.0, 3.0, 0.5)
    ts = [4.0, 8.0, 12.0, 16.0]
    fit = fit_curve(ts, [f(t) for t in ts])
    assert fit.law == "power"
    e, b, alpha = fit.params
    assert e == pytest.approx(2.0, abs=1e-4) and b == pytest.approx(3.0, abs=1e-3)
    assert alpha == pytest.approx(0.5, abs=1e-4)
    # 2 + 3/sqrt(80) = 2.33541
    assert fit.predict(80.0) == pytest.approx(2.0 + 3.0 / math.sqrt(80.0), abs=1e-4)


def test_crossover_steeper_candidate_ranked_first_at_target():
    steep, flat = _law(1.0, 10.0, 0.7), _law(2.0, 1.0, 0.5)
    ts = [4.0, 8.0, 11.0, 15.0]
    assert steep(15) > flat(15)  # A is worse at the end of the proxy run (2.50 vs 2.26) ...
    a, _ = extrapolate(ts, [steep(t) for t in ts], 75.0)
    b, _ = extrapolate(ts, [flat(t) for t in ts], 75.0)
    assert a == pytest.approx(steep(75), abs=1e-3)  # 1.487
    assert b == pytest.approx(flat(75), abs=1e-3)   # 2.115
    assert a < b  # ... and better at the target


def test_two_points_fall_back_to_loglinear():
    fit = fit_curve([2.0, 8.0], [3.0, 2.0])
    assert fit.law == "loglinear"
    # slope -1 per log(4); at t=32 one more log(4): 1.0
    assert fit.raw(32.0) == pytest.approx(1.0)


def test_rising_curve_falls_back_and_is_clipped_to_worst_loss():
    fit = fit_curve([1.0, 2.0, 3.0, 4.0], [2.0, 2.1, 2.3, 2.6])
    assert fit.law == "loglinear"
    assert fit.raw(100.0) > 2.6
    assert fit.predict(100.0) == pytest.approx(2.6)  # never worse than the worst loss seen


def test_runaway_extrapolation_is_clipped_to_loglinear_drop():
    ts, ys = [1.0, 2.0, 4.0], [4.0, 3.0, 2.0]  # 1 loss per doubling
    fit = fit_curve(ts, ys)
    lo, hi = sane_range(fit, 16.0)
    assert lo == pytest.approx(0.0)  # the observed slope extended: 2 - 2 more doublings = 0
    assert hi == 4.0
    assert 0.0 <= fit.predict(16.0) <= 2.0


def test_bad_points_raise():
    with pytest.raises(ValueError, match="increasing"):
        fit_curve([4.0, 2.0, 8.0], [1.0, 0.9, 0.8])
    with pytest.raises(ValueError, match=">= 2"):
        fit_curve([4.0], [1.0])


def test_lr_area_constant_and_cosine():
    assert lr_area("constant", 0.01, 0.0, 10, 10) == pytest.approx(0.1)
    # cosine without warmup over 4 steps: lr * (1 + cos(pi*k/4))/2 for k=0..3 = 1, .8536, .5, .1464 -> 2.5
    assert lr_area("cosine", 1.0, 0.0, 4, 4) == pytest.approx(2.5, abs=1e-6)
    assert lr_area("cosine", 1.0, 0.0, 4, 2) == pytest.approx(1.853553, abs=1e-5)

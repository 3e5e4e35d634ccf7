"""Learning-curve extrapolation: parameter recovery, cross-over ranking, fallback and clipping."""
from __future__ import annotations

import math

import numpy as np
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


# --- the rectified law across data sizes (AtS) ------------------------------------------------------------------

def _rect(b: float, d_l: float, beta: float, e: float):
    return lambda d: e + b / (d_l + d) ** beta


def test_rectified_law_recovers_a_known_curve_and_extrapolates_it():
    from damoc.selection.learning_curve import fit_rectified, nested_sizes

    law = _rect(b=40.0, d_l=800.0, beta=0.6, e=1.2)
    sizes = nested_sizes(6400, points=5)
    assert sizes == [400, 800, 1600, 3200, 6400]
    fit = fit_rectified(sizes, [law(d) for d in sizes])
    assert fit.law == "rectified" and fit.sse < 1e-10
    for target in (12800, 51200):  # 2x and 8x the largest subset
        assert fit.predict(target) == pytest.approx(law(target), rel=2e-3)


def test_pre_power_phase_changes_the_pick_that_a_plain_power_law_makes():
    """Candidate 'slow' sits in its pre-power phase (large D_l): flat on small subsets, then falling; 'fast' is a
    plain power law, ahead on every subset but behind at the full size. The rectified law sees the crossover; a
    power law fitted with D_l = 0 (fewer than 4 points) does not."""
    from damoc.selection.learning_curve import fit_rectified

    slow, fast = _rect(b=3000.0, d_l=3000.0, beta=0.8, e=0.5), _rect(b=6.0, d_l=0.0, beta=0.25, e=1.0)
    sizes, target = [250, 500, 1000, 2000], 64000
    assert all(slow(d) > fast(d) for d in sizes) and slow(target) < fast(target)
    fits = {name: fit_rectified(sizes, [law(d) for d in sizes]) for name, law in (("slow", slow), ("fast", fast))}
    assert fits["slow"].predict(target) < fits["fast"].predict(target)
    assert fits["slow"].predict(target) == pytest.approx(slow(target), rel=0.02)
    three = {name: fit_rectified(sizes[:3], [law(d) for d in sizes[:3]]) for name, law in (("slow", slow),
                                                                                           ("fast", fast))}
    assert three["slow"].law == "power" and three["slow"].params[1] == 0.0


def test_rectified_fit_with_noise_and_degenerate_points():
    from damoc.selection.learning_curve import fit_rectified, nested_sizes

    rng = np.random.default_rng(0)
    law = _rect(b=20.0, d_l=200.0, beta=0.5, e=1.0)
    sizes = [125, 250, 500, 1000, 2000]
    noisy = [law(d) + rng.normal(0, 0.002) for d in sizes]
    fit = fit_rectified(sizes, noisy)
    assert fit.predict(8000) == pytest.approx(law(8000), abs=0.03)
    assert fit.params[3] <= min(noisy) and fit.params[0] >= 0  # E below every loss, B >= 0
    rising = fit_rectified([100, 200, 400], [2.0, 2.1, 2.2])
    assert rising.law == "loglinear"
    with pytest.raises(ValueError):
        fit_rectified([100, 50], [2.0, 1.0])
    with pytest.raises(ValueError):
        fit.predict(0)
    assert nested_sizes(5, points=4) == [1, 2, 5]


def test_subsets_recipe_pieces(tmp_path):
    """The benchmark's `paper-subsets` recipe: nested subset files and the extrapolated signal."""
    from damoc.benchmark.subsets_recipe import subset_files, subsets_signal
    from damoc.benchmark.suite import VARIANTS, recipe
    from damoc.data.records import read_samples, write_samples
    from damoc.data.schema import Sample

    rows = [Sample(id=str(i), instruction="", input=f"q{i}", output=f"a{i}") for i in range(80)]
    write_samples(rows, tmp_path / "compressed.jsonl")
    files = subset_files(tmp_path / "compressed.jsonl", tmp_path / "subsets", points=4)
    assert [size for size, _ in files] == [10, 20, 40, 80]
    subsets = [[s.id for s in read_samples(path)] for _, path in files]
    assert all(small == big[:len(small)] for small, big in zip(subsets, subsets[1:]))  # nested
    law = _rect(b=5.0, d_l=30.0, beta=0.7, e=1.5)
    signal = subsets_signal([(d, -law(d)) for d in (10, 20, 40, 80)], 400)
    assert signal["subsets_loglik"] == pytest.approx(-law(400), rel=1e-3) and signal["subsets_fit"]["law"] == "rectified"
    assert subsets_signal([(10, None), (20, -2.0)], 400)["subsets_loglik"] is None
    rec = recipe("paper-subsets")
    assert rec.kind == "subsets" and rec.overrides["subsets"] == {"points": 4}
    assert "paper-subsets" in VARIANTS["subsets"].recipes and "paper-subsets" not in VARIANTS["full"].recipes

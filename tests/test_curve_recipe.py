"""The curve recipe's signals: wiring of the learning-curve fit to the proxy and grid-search schedules."""
from __future__ import annotations

import pytest

from damoc.benchmark.curve_recipe import PAPER_CURVE, curve_signals, grid_steps
from damoc.benchmark.suite import GRID_TRAINING, task
from damoc.config import TrainingConfig
from damoc.selection.learning_curve import lr_area


def test_grid_steps_match_the_cached_grid_search():
    # the grid-search runs of the cached ground truth took 75 (400 rows) and 189 (1000 rows) optimizer steps
    assert grid_steps(task("medical_qa")) == 75
    assert grid_steps(task("reading")) == 189


def test_curve_signals_extrapolate_in_lr_area_and_steps():
    t = task("medical_qa")
    proxy = TrainingConfig.model_validate({**GRID_TRAINING, "max_length": t.max_length})
    total, steps = 15, [4, 8, 11, 15]
    areas = [lr_area(proxy.lr_scheduler, proxy.learning_rate, proxy.warmup_ratio, total, s) for s in steps]
    e, b, alpha = 1.5, 0.4, 0.6  # a loss that follows a power law in the lr area
    curve = [{"step": s, "loglik": -(e + b * a ** -alpha)} for s, a in zip(steps, areas)]
    out = curve_signals(curve, proxy, total, t)
    target = lr_area(proxy.lr_scheduler, proxy.learning_rate, proxy.warmup_ratio, 75, 75)
    assert out["curve_target"] == {"steps": 75, "lr_area": pytest.approx(target)}
    assert target == pytest.approx(5 * areas[-1], rel=0.02)  # 5x the steps, same schedule shape: ~5x the area
    assert out["curve_loglik_fit"]["law"] == "power"
    assert out["curve_loglik"] == pytest.approx(-(e + b * target ** -alpha), abs=1e-3)
    # better than the last point measured, and the step axis gives its own (different) prediction
    assert out["curve_loglik"] > curve[-1]["loglik"]
    assert out["curve_loglik_steps"] != pytest.approx(out["curve_loglik"], abs=1e-3)


def test_no_curve_no_signal():
    assert curve_signals([], None, 0, task("medical_qa")) == {"curve_loglik": None, "curve_loglik_steps": None}


def test_recipe_definition():
    assert PAPER_CURVE.kind == "curve" and PAPER_CURVE.overrides["curve"] == {"points": 4, "axis": "lr_area"}
    assert PAPER_CURVE.overrides["pruning"]["threshold"] == 0.85  # the paper's settings otherwise

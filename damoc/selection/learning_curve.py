"""Learning-curve extrapolation: from a few (time, eval loss) points of a short proxy run, predict the loss the
same candidate would reach after a longer run, as the rectified-scaling-law selectors do (AtS, ICML 2024;
LensLLM 2025). Ranking by the predicted loss lets a candidate that is worse now but learning faster win.

The law is ``L(t) = E + B * t**(-alpha)`` (E the irreducible loss, B the reducible part at t = 1, alpha the
rate), fitted by bounded least squares (``scipy.optimize.curve_fit``) with ``0 <= E <= min(L)``, ``B >= 0``,
``alpha`` in ``[ALPHA_MIN, ALPHA_MAX]``. With fewer than 3 points, a fit that does not converge, or points
that do not decrease (the power law cannot bend up), the fallback is the log-linear law ``L = a + b*log t``.

The prediction is clipped to a sane range (:func:`sane_range`): never worse than the worst loss seen (a
proxy that overfits is not extrapolated into divergence), never better than the log-linear extension of the
whole observed drop (the first-to-last slope in log t). A power law with E >= 0 is convex in log t, so its
true drop is below that line; the cap only bites on a fit that ran away.

``t`` is any monotone training-time axis: optimizer steps, tokens, or the learning-rate area (the sum of the
learning rates so far: under a decaying schedule the loss follows it better than the step count; Tissue et
al. 2024, "Scaling law with learning rate annealing"). See :func:`lr_area`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHA_MIN, ALPHA_MAX = 1e-3, 3.0


@dataclass(frozen=True)
class CurveFit:
    """A fitted curve. law: "power" (params E, B, alpha) or "loglinear" (params a, b: L = a + b*log t)."""

    law: str
    params: tuple[float, ...]
    t_range: tuple[float, float]   # the observed times
    loss_range: tuple[float, float]  # (min, max) of the observed losses
    first_last: tuple[float, float]  # the first and last observed losses (for the clip's slope)

    def raw(self, t: float) -> float:
        """The law's value at t, unclipped."""
        if self.law == "power":
            e, b, alpha = self.params
            return e + b * t ** (-alpha)
        a, b = self.params
        return a + b * math.log(t)

    def predict(self, t: float) -> float:
        """The law's value at t, clipped to :func:`sane_range`."""
        lo, hi = sane_range(self, t)
        return min(max(self.raw(t), lo), hi)


def _power(t: np.ndarray, e: float, b: float, alpha: float) -> np.ndarray:
    return e + b * np.power(t, -alpha)


def _check(ts: Sequence[float], losses: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(ts, dtype=float)
    y = np.asarray(losses, dtype=float)
    if t.ndim != 1 or t.shape != y.shape or len(t) < 2:
        raise ValueError(f"a learning curve needs >= 2 (t, loss) points of equal count; got {len(t)} times and "
                         f"{len(y)} losses")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        raise ValueError(f"learning-curve points must be finite: t={t.tolist()}, loss={y.tolist()}")
    if np.any(t <= 0) or np.any(np.diff(t) <= 0):
        raise ValueError(f"learning-curve times must be positive and increasing: {t.tolist()}")
    return t, y


def fit_loglinear(ts: Sequence[float], losses: Sequence[float]) -> CurveFit:
    t, y = _check(ts, losses)
    b, a = np.polyfit(np.log(t), y, 1)
    return CurveFit("loglinear", (float(a), float(b)), (float(t[0]), float(t[-1])), (float(y.min()), float(y.max())),
                    (float(y[0]), float(y[-1])))


def fit_curve(ts: Sequence[float], losses: Sequence[float]) -> CurveFit:
    """The power law through the points (see the module doc), else the log-linear fallback."""
    t, y = _check(ts, losses)
    if len(t) < 3 or not y[-1] < y[0]:
        return fit_loglinear(t, y)
    y_min = float(y.min())
    # start: E a little below the lowest loss, alpha 0.5, B through the first point
    e0 = 0.9 * y_min
    p0 = (e0, max((y[0] - e0) * t[0] ** 0.5, 1e-6), 0.5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning (covariance) is about error bars we do not use
            params, _ = _curve_fit(t, y, p0, y_min)
    except (RuntimeError, ValueError):  # no convergence within maxfev, or a degenerate start
        return fit_loglinear(t, y)
    if not np.all(np.isfinite(params)):
        return fit_loglinear(t, y)
    return CurveFit("power", tuple(float(p) for p in params), (float(t[0]), float(t[-1])),
                    (y_min, float(y.max())), (float(y[0]), float(y[-1])))


def _curve_fit(t: np.ndarray, y: np.ndarray, p0: tuple[float, float, float], y_min: float):
    from scipy.optimize import curve_fit

    lower = (0.0, 0.0, ALPHA_MIN)
    upper = (y_min, np.inf, ALPHA_MAX)
    p0 = tuple(min(max(p, lo), hi) for p, lo, hi in zip(p0, lower, upper))
    return curve_fit(_power, t, y, p0=p0, bounds=(lower, upper), maxfev=5000)


def sane_range(fit: CurveFit, t: float) -> tuple[float, float]:
    """(lowest, highest) loss a prediction at t may take: at most the worst loss seen; at least the
    log-linear extension of the first-to-last drop (and >= 0, a loss being a negative log-likelihood)."""
    t0, t1 = fit.t_range
    first, last = fit.first_last
    hi = fit.loss_range[1]
    if t <= t1 or t1 <= t0:
        return max(0.0, min(fit.loss_range[0], fit.raw(t))), hi
    slope = (last - first) / math.log(t1 / t0)  # loss per unit of log t over the observed range
    lo = last + min(slope, 0.0) * math.log(t / t1)
    return max(0.0, min(lo, fit.loss_range[0])), hi


def extrapolate(ts: Sequence[float], losses: Sequence[float], target: float) -> tuple[float, CurveFit]:
    """(predicted loss at `target`, the fit)."""
    fit = fit_curve(ts, losses)
    return fit.predict(target), fit


def lr_area(scheduler: str, learning_rate: float, warmup_ratio: float, total_steps: int, upto: int) -> float:
    """Sum of the learning rates of optimizer steps 0 .. upto-1 of a `total_steps` run under the HF schedule
    `scheduler` (warmup as finetune sets it: ceil(warmup_ratio x total) steps)."""
    if not 0 <= upto <= total_steps:
        raise ValueError(f"lr_area: step {upto} outside a run of {total_steps} steps")
    import torch
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=learning_rate)
    warmup = math.ceil(warmup_ratio * total_steps)
    sched = get_scheduler(scheduler, opt, num_warmup_steps=warmup, num_training_steps=total_steps)
    area = 0.0
    for _ in range(upto):
        area += opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return area

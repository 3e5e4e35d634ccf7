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


# --------------------------------------------------------------------------------------------------------------
# Across data sizes: the rectified fine-tuning scaling law (Lin et al., "Selecting Large Language Model to Fine-tune
# via Rectified Scaling Law", ICML 2024): L(D) = B / (D_l + D)**beta + E. D is the number of fine-tuning rows; D_l,
# the "pre-learned data size", is what the pre-power phase looks like — with D small against D_l the loss barely
# moves, and only once D passes D_l does it fall as a power law. Fitted to proxies trained on nested subsets of
# the filtered data (D, D/2, D/4, …), the law predicts each candidate's loss at the full data size.

BETA_MIN, BETA_MAX = 1e-2, 3.0


@dataclass(frozen=True)
class RectifiedFit:
    """L(D) = B / (D_l + D)**beta + E. law: "rectified" (4 parameters), or "power" (D_l fixed at 0: fewer than 4
    points), or "loglinear" (the fallback of `fit_curve`, params a, b)."""

    law: str
    params: tuple[float, ...]
    d_range: tuple[float, float]
    loss_range: tuple[float, float]
    sse: float

    def predict(self, d: float) -> float:
        if d <= 0:
            raise ValueError(f"data size must be positive, got {d}")
        if self.law == "loglinear":
            a, b = self.params
            return max(0.0, a + b * math.log(d))
        b, d_l, beta, e = self.params
        return e + b / (d_l + d) ** beta


def fit_rectified(sizes: Sequence[float], losses: Sequence[float]) -> RectifiedFit:
    """The rectified law through (data size, loss) points, by bounded least squares from several starts (D_l from
    0 to 10x the largest size, beta 0.3 and 1); the least squared error wins.

    Bounds: B >= 0, 0 <= D_l <= 100 x max size, beta in [BETA_MIN, BETA_MAX], 0 <= E <= min loss. Sizes are
    scaled by the largest one and B is fitted as log(B) (conditioning). Fewer than 4 points cannot pin 4
    parameters: D_l is fixed at 0 (a plain power law in D). Points that do not decrease with D fall back to the
    log-linear law."""
    d, y = _check(sizes, losses)
    if len(d) < 3 or not y[-1] < y[0]:
        return _loglinear_rectified(d, y)
    from scipy.optimize import least_squares

    y_min, scale = float(y.min()), float(d.max())
    x = d / scale
    free_dl = len(d) >= 4

    def unpack(p: np.ndarray) -> tuple[float, float, float, float]:  # (log B', s = D_l / scale, beta, E)
        return (float(p[0]), float(p[1]), float(p[2]), float(p[3])) if free_dl else \
            (float(p[0]), 0.0, float(p[1]), float(p[2]))

    def residuals(p: np.ndarray) -> np.ndarray:
        log_b, s_l, beta, e = unpack(p)
        return e + np.exp(log_b - beta * np.log(s_l + x)) - y

    best: tuple[float, tuple[float, float, float, float]] | None = None
    for s0 in ((0.0, float(x.min()), 1.0, 10.0) if free_dl else (0.0,)):
        for beta0 in (0.3, 1.0):
            e0 = 0.5 * y_min
            log_b0 = math.log(max(y[0] - e0, 1e-9)) + beta0 * math.log(s0 + x[0])
            lower = [-np.inf, 0.0, BETA_MIN, 0.0] if free_dl else [-np.inf, BETA_MIN, 0.0]
            upper = [np.inf, 100.0, BETA_MAX, y_min] if free_dl else [np.inf, BETA_MAX, y_min]
            p0 = [log_b0, s0, beta0, e0] if free_dl else [log_b0, beta0, e0]
            p0 = [min(max(v, lo), hi) for v, lo, hi in zip(p0, lower, upper)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    result = least_squares(residuals, p0, bounds=(lower, upper), max_nfev=2000)
                except ValueError:
                    continue
            if not np.all(np.isfinite(result.x)):
                continue
            sse = float(np.sum(residuals(result.x) ** 2))
            if best is None or sse < best[0]:
                best = (sse, unpack(result.x))
    if best is None:
        return _loglinear_rectified(d, y)
    log_b, s_l, beta, e = best[1]
    params = (math.exp(log_b) * scale ** beta, s_l * scale, beta, e)  # back to rows: B = B' x scale**beta
    return RectifiedFit("rectified" if free_dl else "power", params, (float(d[0]), float(d[-1])),
                        (y_min, float(y.max())), best[0])


def _loglinear_rectified(d: np.ndarray, y: np.ndarray) -> RectifiedFit:
    fit = fit_loglinear(d, y)
    return RectifiedFit("loglinear", fit.params, (float(d[0]), float(d[-1])), (float(y.min()), float(y.max())),
                        float(np.sum((np.array([fit.raw(t) for t in d]) - y) ** 2)))


def nested_sizes(full: int, points: int = 4) -> list[int]:
    """The nested subset sizes full/2**(points-1), …, full/2, full (AtS's D, D/2, D/4, …), each at least 1."""
    if full < 1 or points < 1:
        raise ValueError(f"need full >= 1 and points >= 1, got {full}, {points}")
    return sorted({max(1, full // 2 ** k) for k in range(points)})

"""Agreement of a cheap ranking with the grid-search ground truth (mean over seeds, with its seed spread)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy.stats import kendalltau, spearmanr


def ground_truth_summary(seed_scores: Mapping[str, list[float]]) -> dict[str, Any]:
    """Per candidate mean and sample std over seeds; the best candidate and its tolerance (one seed std)."""
    means = {c: float(np.mean(v)) for c, v in seed_scores.items() if v}
    stds = {c: (float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for c, v in seed_scores.items() if v}
    order = sorted(means, key=lambda c: (-means[c], c))
    best = order[0] if order else None
    return {"mean": means, "std": stds, "order": order, "best": best,
            "tolerance": stds.get(best, 0.0) if best else 0.0,
            "tolerated": [c for c in order if best and means[best] - means[c] <= stds[best] + 1e-12]}


def agreement(proxy_scores: Mapping[str, float | None], truth: dict[str, Any]) -> dict[str, Any]:
    """Strict/tolerant top-1, Kendall tau, Spearman rho of `proxy_scores` (higher = better) vs the truth.

    Candidates without a proxy score (failed) count as ranked last by the proxy; they never make a pick.
    Tolerant: the pick's ground-truth mean is within one seed standard deviation of the best candidate's.
    """
    scored = {c: s for c, s in proxy_scores.items() if s is not None and math.isfinite(s) and c in truth["mean"]}
    if not scored:
        return {"pick": None, "strict_top1": False, "tolerant_top1": False, "kendall_tau": None,
                "spearman_rho": None, "regret": None}
    pick = sorted(scored, key=lambda c: (-scored[c], c))[0]
    common = sorted(truth["mean"])
    floor = min(scored.values()) - 1.0
    xs = [scored.get(c, floor) for c in common]
    ys = [truth["mean"][c] for c in common]
    tau = float(kendalltau(xs, ys).statistic) if len(common) > 1 else None
    rho = float(spearmanr(xs, ys).statistic) if len(common) > 1 else None
    return {
        "pick": pick,
        "strict_top1": pick == truth["best"],
        "tolerant_top1": pick in truth["tolerated"],
        "kendall_tau": None if tau is None or math.isnan(tau) else tau,
        "spearman_rho": None if rho is None or math.isnan(rho) else rho,
        "regret": truth["mean"][truth["best"]] - truth["mean"][pick],  # ground-truth points lost by the pick
    }

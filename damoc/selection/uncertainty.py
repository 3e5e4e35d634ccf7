"""How sure a ranking is: paired bootstrap over the evaluation rows.

Every candidate is scored on the same eval rows, so the gap between the winner and a rival is measured row by
row (paired): resampling rows with replacement gives the gap's sampling distribution. A rival whose gap
interval at the chosen confidence reaches 0 is statistically tied with the winner on this eval set — the
report names it, so nobody reads a 0.003 lead on 60 rows as a decision.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def paired_bootstrap(row_values: Mapping[str, Sequence[float]], winner: str, *, confidence: float = 0.9,
                     samples: int = 1000, seed: int = 0) -> dict:
    """Intervals of each candidate's mean and of its gap to `winner`, and who is tied with the winner.

    row_values: per candidate, one value per eval row (same rows, same order for all). Candidates whose rows
    do not line up with the winner's are reported under `unpaired`, never silently compared.
    """
    if winner not in row_values:
        raise ValueError(f"winner {winner!r} has no row values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    base = np.asarray(row_values[winner], dtype=np.float64)
    n = len(base)
    lo_q, hi_q = (1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0
    out: dict = {"method": "paired bootstrap over eval rows", "confidence": confidence, "samples": samples,
                 "rows": n, "winner": winner, "intervals": {}, "gap_intervals": {}, "tied_with_winner": [],
                 "unpaired": []}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))  # the same resamples for every candidate: paired
    for name, values in row_values.items():
        v = np.asarray(values, dtype=np.float64)
        if len(v) != n or not np.all(np.isfinite(v)):
            out["unpaired"].append(name)
            continue
        means = v[idx].mean(axis=1)
        out["intervals"][name] = [float(np.quantile(means, lo_q)), float(np.quantile(means, hi_q))]
        if name == winner:
            continue
        gaps = (base - v)[idx].mean(axis=1)
        low, high = float(np.quantile(gaps, lo_q)), float(np.quantile(gaps, hi_q))
        out["gap_intervals"][name] = [low, high]
        if low <= 0.0:
            out["tied_with_winner"].append(name)
    out["tied_with_winner"].sort(key=lambda c: (out["gap_intervals"][c][0], c))
    return out

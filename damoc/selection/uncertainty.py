"""How sure a ranking is: paired bootstrap over the evaluation rows.

Every candidate is scored on the same eval rows, so the gap between the winner and a rival is measured row by
row (paired): resampling rows with replacement gives the gap's sampling distribution. A rival whose gap
interval at the chosen confidence reaches 0 is statistically tied with the winner on this eval set — the
report names it, so nobody reads a 0.003 lead on 60 rows as a decision.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

_CHUNK_CELLS = 1 << 18  # resampled cells per chunk (~2 MiB of indices)


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
    paired = {}
    for name, values in row_values.items():
        v = np.asarray(values, dtype=np.float64)
        if len(v) != n or not np.all(np.isfinite(v)):
            out["unpaired"].append(name)
        else:
            paired[name] = v
    means = {name: np.empty(samples) for name in paired}
    gaps = {name: np.empty(samples) for name in paired if name != winner}
    # The same resamples for every candidate (paired), drawn in chunks so memory stays flat in the row count
    # (the generator yields the same indices as one (samples, n) draw).
    step = max(1, _CHUNK_CELLS // n)
    for start in range(0, samples, step):
        idx = rng.integers(0, n, size=(min(step, samples - start), n))
        for name, v in paired.items():
            means[name][start:start + len(idx)] = v[idx].mean(axis=1)
            if name != winner:
                gaps[name][start:start + len(idx)] = (base - v)[idx].mean(axis=1)
    for name in paired:
        out["intervals"][name] = [float(np.quantile(means[name], lo_q)), float(np.quantile(means[name], hi_q))]
        if name == winner:
            continue
        low, high = float(np.quantile(gaps[name], lo_q)), float(np.quantile(gaps[name], hi_q))
        out["gap_intervals"][name] = [low, high]
        if low <= 0.0:
            out["tied_with_winner"].append(name)
    out["tied_with_winner"].sort(key=lambda c: (out["gap_intervals"][c][0], c))
    return out


def bootstrap_p_best(row_values: Mapping[str, Sequence[float]], selected: str, *, samples: int = 1000,
                     seed: int = 1, sure_at: float = 0.9) -> dict:
    """How sure the pick is: the share of paired bootstrap resamples of the eval rows in which `selected` has the
    best mean of the ranking signal (higher is better), with the same share for every other candidate.

    A resample where several candidates share the best mean credits each of them 1/k. The p_first values sum
    to 1. This covers the sampling noise of the eval rows only, not the noise of training the proxies (seed,
    data order): whether it predicts grid search's winner is what the benchmark's calibration table measures.
    `sure_at`: p_best at or above it is reported as sure. Candidates whose rows do not line up (length, NaN)
    are left out and listed under `unpaired`.
    """
    if selected not in row_values:
        raise ValueError(f"selected candidate {selected!r} has no row values")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not 0.0 < sure_at <= 1.0:
        raise ValueError(f"sure_at must be in (0, 1], got {sure_at}")
    base = np.asarray(row_values[selected], dtype=np.float64)
    n = len(base)
    paired: dict[str, np.ndarray] = {}
    unpaired: list[str] = []
    for name, values in row_values.items():
        v = np.asarray(values, dtype=np.float64)
        if len(v) == n and np.all(np.isfinite(v)):
            paired[name] = v
        else:
            unpaired.append(name)
    out: dict = {"method": "paired bootstrap", "signal_rows": n, "samples": samples, "seed": seed,
                 "candidates": sorted(paired), "unpaired": sorted(unpaired), "selected": selected,
                 "p_best": None, "p_first": {}, "sure_at": sure_at, "sure": False,
                 "covers": "eval-row sampling noise only (not proxy training noise)"}
    if n == 0 or selected not in paired:
        return out
    names = sorted(paired)
    matrix = np.stack([paired[name] for name in names])  # (candidates, rows)
    wins = np.zeros(len(names))
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_CELLS // n)
    for start in range(0, samples, step):
        idx = rng.integers(0, n, size=(min(step, samples - start), n))  # the same rows for every candidate
        means = matrix[:, idx].mean(axis=2)  # (candidates, resamples)
        best = means >= means.max(axis=0, keepdims=True) - 1e-12 * np.abs(means).max(axis=0, keepdims=True)
        wins += (best / best.sum(axis=0, keepdims=True)).sum(axis=1)
    p_first = wins / samples
    out["p_first"] = {name: float(p) for name, p in zip(names, p_first)}
    out["p_best"] = out["p_first"][selected]
    out["sure"] = bool(out["p_best"] >= sure_at)
    return out


def confidence_text(confidence: Mapping | None) -> str | None:
    """One line for the report: how sure the pick is, and the runner-up's share."""
    if not confidence or confidence.get("p_best") is None:
        return None
    others = sorted(((p, name) for name, p in confidence["p_first"].items() if name != confidence["selected"]),
                    reverse=True)
    runner = f"; next: {others[0][1]} {others[0][0]:.0%}" if others and others[0][0] > 0 else ""
    verdict = "sure" if confidence["sure"] else "not sure"
    return (f"{confidence['p_best']:.0%} of {confidence['samples']} paired bootstrap resamples of the "
            f"{confidence['signal_rows']} eval rows rank the pick first ({verdict} at {confidence['sure_at']:.0%})"
            f"{runner}; eval-row noise only")

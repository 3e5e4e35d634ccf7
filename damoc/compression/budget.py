"""Budget controller: which words to keep for a target rate, and how a text is cut into segments.

Pure functions over word scores (higher score = more informative = kept); no model involved.
"""
from __future__ import annotations

import math

import numpy as np

# rate * n is computed in floating point (0.6 * 5 = 3.0000000000000004); without the slack ceil() would
# keep one word too many whenever the product is meant to be an integer.
_EPS = 1e-9


def budget(n_words: int, rate: float) -> int:
    """Words kept out of n_words: ceil(rate * n), at least 1 (for a non-empty text), at most n."""
    if n_words <= 0:
        return 0
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    return min(n_words, max(1, math.ceil(rate * n_words - _EPS)))


def keep_mask(scores: np.ndarray, rate: float) -> np.ndarray:
    """Boolean mask keeping the budget(n, rate) highest-scoring words; ties go to the earlier word.

    The mask is positional, so applying it preserves the original word order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    mask = np.zeros(n, dtype=bool)
    k = budget(n, rate)
    if k:
        # A stable sort on -score ranks equal scores by position (earlier first).
        order = np.argsort(-scores, kind="stable")
        mask[order[:k]] = True
    return mask


def segments(n_words: int, segment_words: int) -> list[tuple[int, int]]:
    """[start, end) word ranges of consecutive segments of at most segment_words words."""
    if segment_words < 1:
        raise ValueError(f"segment_words must be >= 1, got {segment_words}")
    return [(start, min(start + segment_words, n_words)) for start in range(0, n_words, segment_words)]


# --- token budgets -------------------------------------------------------------------------------------

def select_by_density(scores: np.ndarray, costs: np.ndarray, budget_tokens: float) -> np.ndarray:
    """Keep words by score per token (highest first, ties to the earlier word) while their token cost fits.

    A knapsack filled greedily: a word that does not fit is skipped and cheaper ones after it may still fill
    the remainder, so the kept cost is within one word of the budget and never above it. Zero-cost words
    count as costing one token for the ranking and are free to keep.
    """
    scores = np.asarray(scores, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.int64)
    mask = np.zeros(scores.shape[0], dtype=bool)
    remaining = float(budget_tokens)
    if remaining <= 0 or not scores.size:
        return mask
    density = scores / np.maximum(costs, 1)
    for i in np.argsort(-density, kind="stable"):
        if costs[i] <= remaining + _EPS:
            mask[i] = True
            remaining -= costs[i]
    return mask


def solve_part_rates(target: float, part_tokens: dict[str, int], fixed: dict[str, float | None],
                     min_rate: float = 0.05) -> dict[str, float]:
    """Per-part kept fractions whose token-weighted mean is `target` (as near as the bounds allow).

    Parts with a fixed rate keep it; the free parts (rate None) share one rate solved from
    target * total = sum(fixed_rate * tokens) + free_rate * free_tokens, clamped to [min_rate, 1].
    """
    total = sum(part_tokens.values())
    rates = {part: rate for part, rate in fixed.items() if rate is not None}
    free = [part for part in part_tokens if rates.get(part) is None]
    free_tokens = sum(part_tokens[p] for p in free)
    if free:
        fixed_kept = sum(rates[p] * part_tokens[p] for p in part_tokens if p not in free)
        shared = (target * total - fixed_kept) / free_tokens if free_tokens else target
        shared = min(1.0, max(min_rate, shared))
        rates.update({p: shared for p in free})
    return {part: rates[part] for part in part_tokens}

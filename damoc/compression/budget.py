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

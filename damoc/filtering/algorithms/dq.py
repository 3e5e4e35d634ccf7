"""Dataset Quantization (Zhou et al., ICCV 2023, "Dataset Quantization"), for sample selection.

1. Bins: split the pool into `n_bins` non-overlapping bins by successive GraphCut greedy selection:
   bin 1 is a greedy GraphCut selection of ~N/K items from the whole pool, bin k a selection of ~N/K items
   from what bins 1..k-1 left (the ground set V of the GraphCut objective is that remainder). The last bin
   is simply the remainder. Early bins hold representative points, later bins increasingly diverse ones.
2. Sampling: take a uniform random sample from every bin, the bin's share of `n_select` being
   proportional to its size (largest-remainder rounding, so the total is exactly `n_select`).

Cost: binning runs greedy steps over shrinking pools, about N^2 * d / 2 multiply-adds in total with
O(n*d) memory (the exact `graphcut_greedy` is used; no kernel is stored). Deterministic for a seed: the
bins do not depend on it, only the per-bin sampling does.
"""
from __future__ import annotations

import numpy as np

from damoc.filtering.algorithms._common import as_embeddings, check_n_select

DEFAULT_BINS = 10
DEFAULT_LAMBDA = 1.0  # DaMoC's DQ default (DAMOC.md); the GraphCut filter itself defaults to 0.4


def _graphcut_greedy(emb: np.ndarray, k: int, lambda_: float) -> list[int]:
    # Imported lazily so this module stays importable while the filter registry is being reorganised.
    from damoc.filtering.graphcut import graphcut_greedy

    return graphcut_greedy(emb, k, lambda_)


def bin_sizes(n: int, n_bins: int) -> list[int]:
    """n split into min(n_bins, n) near-equal sizes, larger ones first (e.g. 10 into 3 -> [4, 3, 3])."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    k = min(n_bins, n) if n else 1
    base, extra = divmod(n, k)
    return [base + (1 if b < extra else 0) for b in range(k)]


def dq_bins(embeddings: np.ndarray, n_bins: int = DEFAULT_BINS, lambda_: float = DEFAULT_LAMBDA) -> list[list[int]]:
    """The DQ bins: a partition of range(n) into near-equal bins, each in its greedy pick order."""
    emb = as_embeddings(embeddings)
    n = emb.shape[0]
    sizes = bin_sizes(n, n_bins)
    remaining = np.arange(n)
    bins: list[list[int]] = []
    for b, size in enumerate(sizes):
        if b == len(sizes) - 1:  # the last bin is what is left
            bins.append(remaining.tolist())
            break
        picks = _graphcut_greedy(emb[remaining], size, lambda_)
        bins.append(remaining[picks].tolist())
        keep = np.ones(remaining.size, dtype=bool)
        keep[picks] = False
        remaining = remaining[keep]
    return bins


def allocate(n_select: int, sizes: list[int]) -> list[int]:
    """Split n_select over bins in proportion to their sizes; largest remainder, ties to earlier bins."""
    total = sum(sizes)
    check_n_select(n_select, total)
    if total == 0:
        return [0] * len(sizes)
    exact = [n_select * s / total for s in sizes]
    quota = [int(q) for q in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda b: (-(exact[b] - quota[b]), b))
    for b in by_remainder[: n_select - sum(quota)]:
        quota[b] += 1
    return quota


def dq_select(embeddings: np.ndarray, n_select: int, *, n_bins: int = DEFAULT_BINS,
              lambda_: float = DEFAULT_LAMBDA, seed: int = 0) -> list[int]:
    """Dataset Quantization: `n_select` distinct indices, bin by bin (bin order, then sampled order).

    Uniform sampling within bins uses `numpy.random.default_rng(seed)`.
    """
    emb = as_embeddings(embeddings)
    n = emb.shape[0]
    n_select = check_n_select(n_select, n)
    if n_select == 0:
        return []
    bins = dq_bins(emb, n_bins, lambda_)
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for members, q in zip(bins, allocate(n_select, [len(b) for b in bins])):
        if q:
            out.extend(int(i) for i in rng.choice(np.asarray(members), size=q, replace=False))
    return out

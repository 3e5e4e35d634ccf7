"""K-center greedy (farthest-point traversal) on embeddings, O(n*d) memory.

Greedy: start from one point, then repeatedly add argmax_i min_{c in C} ||x_i - x_c||_2 (the point worst
covered by the centres so far). This is Gonzalez's 2-approximation of the k-center problem
(minimise the covering radius max_i min_{c in C} ||x_i - x_c||). Used by Sener & Savarese's core-set
active learning and by MoDS for its seed set.

Implementation: keep d2_i = min_c ||x_i - x_c||^2 (float64, length n) and update it with one mat-vec per
pick, ||x_i - x_p||^2 = |x_i|^2 + |x_p|^2 - 2 x_i . x_p, so memory is O(n*d) and never n x n.
"""
from __future__ import annotations

from typing import Iterable, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from damoc.filtering.algorithms._common import as_embeddings, check_n_select, rows_per_block


def _sq_dist_to(emb: np.ndarray, sq_norms: np.ndarray, p: int, buf: np.ndarray) -> np.ndarray:
    """||x_i - x_p||^2 for all i (float64, clipped at 0 against rounding)."""
    np.matmul(emb, emb[p], out=buf)
    d2 = sq_norms + sq_norms[p] - 2.0 * buf.astype(np.float64, copy=False)
    np.maximum(d2, 0.0, out=d2)
    d2[p] = 0.0
    return d2


def kcenter_greedy(embeddings: np.ndarray, n_select: int, *, seed: int = 0,
                   start: Literal["random", "mean"] = "random",
                   initial: Iterable[int] | None = None) -> list[int]:
    """Farthest-point selection of `n_select` indices, returned in pick order.

    start: "random" -> the first pick is drawn uniformly with `numpy.random.default_rng(seed)`;
           "mean"   -> the first pick is the point nearest (L2) to the mean embedding (seed unused).
    initial: indices already chosen (e.g. a seed set); they count as centres but are not returned, and
           `start` is ignored when any are given.
    Later picks are deterministic: argmax of the distance to the nearest centre, lowest index on ties.
    Once every point is at distance 0 (duplicates), the remaining picks are the lowest unpicked indices.
    """
    emb = as_embeddings(embeddings)
    n = emb.shape[0]
    n_select = check_n_select(n_select, n)
    init = [int(i) for i in (initial or [])]
    if any(not 0 <= i < n for i in init):
        raise ValueError(f"initial indices must be in [0, {n})")
    if len(set(init)) + n_select > n:
        raise ValueError(f"cannot pick {n_select} new points: only {n - len(set(init))} remain")
    if start not in ("random", "mean"):
        raise ValueError(f"start must be 'random' or 'mean', got {start!r}")
    if n_select == 0:
        return []

    sq_norms = np.einsum("ij,ij->i", emb, emb, dtype=np.float64)
    buf = np.empty(n, dtype=emb.dtype)
    min_d2 = np.full(n, np.inf)
    picked = np.zeros(n, dtype=bool)
    order: list[int] = []
    # One BLAS thread: each step is a short memory-bound mat-vec (see graphcut.py for the measurement).
    with threadpool_limits(limits=1, user_api="blas"):
        if init:
            for c in dict.fromkeys(init):
                np.minimum(min_d2, _sq_dist_to(emb, sq_norms, c, buf), out=min_d2)
                picked[c] = True
        else:
            if start == "random":
                first = int(np.random.default_rng(seed).integers(n))
            else:
                mean = emb.mean(axis=0, dtype=np.float64)
                first = int(np.argmin(sq_norms - 2.0 * (emb @ mean.astype(emb.dtype))))
            order.append(first)
            picked[first] = True
            np.minimum(min_d2, _sq_dist_to(emb, sq_norms, first, buf), out=min_d2)
        while len(order) < n_select:
            score = np.where(picked, -1.0, min_d2)  # picked points have distance 0 anyway; -1 excludes them
            p = int(np.argmax(score))
            order.append(p)
            picked[p] = True
            np.minimum(min_d2, _sq_dist_to(emb, sq_norms, p, buf), out=min_d2)
    return order


def covering_radius(embeddings: np.ndarray, selected: Iterable[int], *, memory_budget_mb: float = 64.0) -> float:
    """max_i min_{c in selected} ||x_i - x_c||_2, computed over blocks of points.

    Each block holds (block rows) x |selected| float64 distances within `memory_budget_mb`; never n x n.

    Returns inf for an empty selection (nothing covers anything) and 0.0 for an empty point set.
    """
    emb = as_embeddings(embeddings)
    sel = np.fromiter((int(i) for i in selected), dtype=np.int64)
    n = emb.shape[0]
    if n == 0:
        return 0.0
    if sel.size == 0:
        return float("inf")
    if sel.min() < 0 or sel.max() >= n:
        raise ValueError(f"selected indices must be in [0, {n})")
    centres = emb[sel]
    c_sq = np.einsum("ij,ij->i", centres, centres, dtype=np.float64)
    worst = 0.0
    chunk = rows_per_block(sel.size, memory_budget_mb, itemsize=8)
    for s in range(0, n, chunk):
        block = emb[s:s + chunk]
        b_sq = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        d2 = b_sq[:, None] + c_sq[None, :] - 2.0 * (block @ centres.T).astype(np.float64)
        worst = max(worst, float(np.maximum(d2.min(axis=1), 0.0).max()))
    return float(np.sqrt(worst))

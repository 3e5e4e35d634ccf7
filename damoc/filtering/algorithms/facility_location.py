"""Facility-location greedy without an n x n kernel in memory.

    f(X) = sum_{i in V} max(0, max_{j in X} s_ij),      s_ij = e_i . e_j  (cosine when rows are unit-norm)

Every point i is "served" by its most similar selected point; f(empty) = 0, and the zero floor (the same
convention as apricot and submodlib, whose running maxima start at 0) keeps f monotone submodular even
when cosine similarities are negative, so greedy is within 1 - 1/e of the optimum.

Marginal gain of j given the current coverage c_i = max(0, max_{k in X} s_ik):
    g(j | X) = sum_i max(0, s_ij - c_i)
Computing g for a candidate needs its kernel row E e_j (O(n*d)); no kernel is stored. Optimizers:

- "incremental" (exact, default): keeps every gain exact. Picking p raises the coverage of the points
  U = {i : s_ip > c_i} only, so g(j) changes by sum_{i in U} [max(0, s_ij - c_i') - max(0, s_ij - c_i)]:
  one |U| x n kernel block per step (blocked to the memory budget). A point's coverage rises only a few
  times over the run, so the total work is a small multiple of one n^2*d kernel pass, whether or not the
  gains are flat (random high-dimensional data, where lazy greedy re-evaluates a large share of the
  candidates at every step).
- "lazy" (exact): Minoux's lazy greedy. Upper bounds start at g(j | {}) (one blocked pass over
  the kernel: n^2*d work, O(block * n) memory); by submodularity gains only shrink, so at each step only
  the candidates whose stale bound still tops the list are re-evaluated, `batch_size` at a time in one
  matrix product. A candidate is accepted when its bound is fresh and is the maximum (lowest index on
  equal values), which returns the naive greedy's picks. Exact ties are common (two uncovered points that
  only cover each other gain the same); a definition-level greedy that sums in another order may break
  them the other way, so "identical" holds up to float rounding of tied gains.
- "naive" (exact): re-evaluates every gain at every step (blocked). O(k * n^2 * d); a reference.
- "stochastic": Mirzasoleiman et al. 2015 stochastic greedy: each step evaluates a seeded random sample
  of ceil(n/k * ln(1/epsilon)) unpicked candidates and takes the best; (1 - 1/e - epsilon) in expectation.

Memory: the embeddings, a few length-n float64 vectors, and kernel blocks of at most `memory_budget_mb`.
"""
from __future__ import annotations

import heapq
import math
from typing import Iterable, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from damoc.filtering.algorithms._common import as_embeddings, check_n_select, rows_per_block, unit_rows

Optimizer = Literal["incremental", "lazy", "naive", "stochastic"]


def _prepare(embeddings: np.ndarray, normalize: bool) -> np.ndarray:
    emb = as_embeddings(embeddings)
    return unit_rows(emb) if normalize else emb


def _gains(emb: np.ndarray, cand: np.ndarray, cover: np.ndarray, budget_mb: float,
           rows_out: np.ndarray | None = None) -> np.ndarray:
    """g(j | X) = sum_i max(0, s_ij - cover_i) for j in cand, in float64, blocked over candidates.

    If rows_out (len(cand) x n) is given it receives the kernel rows (used to update the coverage).
    """
    n = emb.shape[0]
    out = np.empty(len(cand), dtype=np.float64)
    step = rows_per_block(n, budget_mb, itemsize=8)
    for s in range(0, len(cand), step):
        rows = emb[cand[s:s + step]] @ emb.T  # (b, n) in the embeddings' dtype
        if rows_out is not None:
            rows_out[s:s + step] = rows
        diff = rows - cover  # float64
        np.maximum(diff, 0.0, out=diff)
        out[s:s + step] = diff.sum(axis=1)
    return out


def facility_location_greedy(embeddings: np.ndarray, n_select: int, *, optimizer: Optimizer = "incremental",
                             normalize: bool = True, batch_size: int = 32, epsilon: float = 0.01,
                             seed: int = 0, memory_budget_mb: float = 256.0,
                             blas_threads: int | None = None) -> list[int]:
    """Greedy maximisation of facility location; returns `n_select` indices in pick order.

    normalize: scale rows to unit norm first (cosine kernel); False uses the raw dot product.
    optimizer: "incremental", "lazy" and "naive" are exact greedy (same picks up to float rounding of tied
        gains); "stochastic" uses
        `seed` and `epsilon`.
    batch_size: stale candidates re-evaluated together by the lazy optimizer (one matrix product).
    memory_budget_mb: cap on each kernel block (rows x n float64 temporaries).
    blas_threads: limit BLAS threads for the call (None leaves the process setting alone).
    """
    emb = _prepare(embeddings, normalize)
    n = emb.shape[0]
    n_select = check_n_select(n_select, n)
    if optimizer not in ("incremental", "lazy", "naive", "stochastic"):
        raise ValueError(f"optimizer must be 'incremental', 'lazy', 'naive' or 'stochastic', got {optimizer!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if optimizer == "stochastic" and not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    if n_select == 0:
        return []
    limits = threadpool_limits(limits=blas_threads, user_api="blas") if blas_threads else None
    try:
        if optimizer == "incremental":
            return _incremental(emb, n_select, memory_budget_mb)
        if optimizer == "lazy":
            return _lazy(emb, n_select, batch_size, memory_budget_mb)
        if optimizer == "naive":
            return _naive(emb, n_select, memory_budget_mb)
        return _stochastic(emb, n_select, epsilon, seed, memory_budget_mb)
    finally:
        if limits is not None:
            limits.restore_original_limits()


def _incremental(emb: np.ndarray, k: int, budget_mb: float) -> list[int]:
    n = emb.shape[0]
    cover = np.zeros(n, dtype=np.float64)
    gains = _gains(emb, np.arange(n), cover, budget_mb)  # g(j | {}) = sum_i max(0, s_ij)
    row = np.empty(n, dtype=emb.dtype)
    step = rows_per_block(n, budget_mb, itemsize=8)
    order: list[int] = []
    for _ in range(k):
        p = int(np.argmax(gains))  # picked entries are -inf
        order.append(p)
        np.matmul(emb, emb[p], out=row)
        changed = np.flatnonzero(row > cover)
        new_cover = row[changed].astype(np.float64)
        for s in range(0, changed.size, step):
            idx = changed[s:s + step]
            block = emb[idx] @ emb.T  # s_ij for i in this part of U, all j
            old = cover[idx]
            new = new_cover[s:s + step]
            # With old < new: max(0, x - new) - max(0, x - old) = -(clip(x, old, new) - old).
            np.clip(block, old.astype(emb.dtype)[:, None], new.astype(emb.dtype)[:, None], out=block)
            gains -= block.sum(axis=0, dtype=np.float64) - old.sum()
        cover[changed] = new_cover
        gains[p] = -np.inf  # stays -inf: later updates are finite
    return order


def _lazy(emb: np.ndarray, k: int, batch_size: int, budget_mb: float) -> list[int]:
    n = emb.shape[0]
    cover = np.zeros(n, dtype=np.float64)
    bounds = _gains(emb, np.arange(n), cover, budget_mb)
    # Max-heap of (-bound, index): equal bounds pop lowest index first. fresh[j] is the step at which
    # j's bound was last computed exactly.
    heap = [(-float(b), j) for j, b in enumerate(bounds)]
    heapq.heapify(heap)
    fresh = np.zeros(n, dtype=np.int64)  # the initial bounds are the exact gains of step 0 (empty set)
    row = np.empty((1, n), dtype=emb.dtype)
    order: list[int] = []
    for step in range(k):
        while True:
            neg, j = heap[0]
            if fresh[j] == step:  # exact gain, and every other bound is <= it (ties: larger index)
                heapq.heappop(heap)
                break
            # Re-evaluate the stale candidates among the top of the heap in one product.
            popped = [heapq.heappop(heap)]
            while heap and len(popped) < batch_size:
                popped.append(heapq.heappop(heap))
            stale = np.array([i for _, i in popped if fresh[i] != step], dtype=np.int64)
            new = _gains(emb, stale, cover, budget_mb)
            fresh[stale] = step
            exact = dict(zip(stale.tolist(), new.tolist()))
            for b, i in popped:
                heapq.heappush(heap, (-exact[i], i) if i in exact else (b, i))
        order.append(j)
        np.matmul(emb[j][None, :], emb.T, out=row)
        np.maximum(cover, row[0], out=cover)
    return order


def _naive(emb: np.ndarray, k: int, budget_mb: float) -> list[int]:
    n = emb.shape[0]
    cover = np.zeros(n, dtype=np.float64)
    picked = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(k):
        cand = np.flatnonzero(~picked)
        g = _gains(emb, cand, cover, budget_mb)
        j = int(cand[int(np.argmax(g))])
        order.append(j)
        picked[j] = True
        np.maximum(cover, emb @ emb[j], out=cover)
    return order


def _stochastic(emb: np.ndarray, k: int, epsilon: float, seed: int, budget_mb: float) -> list[int]:
    n = emb.shape[0]
    rng = np.random.default_rng(seed)
    sample_size = min(n, max(1, math.ceil(n / k * math.log(1.0 / epsilon))))
    cover = np.zeros(n, dtype=np.float64)
    picked = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(k):
        remaining = np.flatnonzero(~picked)
        cand = np.sort(rng.choice(remaining, size=min(sample_size, remaining.size), replace=False))
        rows = np.empty((cand.size, n), dtype=emb.dtype) if cand.size * n * 8 <= budget_mb * 2**20 else None
        g = _gains(emb, cand, cover, budget_mb, rows_out=rows)
        best = int(np.argmax(g))
        j = int(cand[best])
        order.append(j)
        picked[j] = True
        np.maximum(cover, rows[best] if rows is not None else emb @ emb[j], out=cover)
    return order


def facility_location_value(embeddings: np.ndarray, selected: Iterable[int], *, normalize: bool = True,
                            memory_budget_mb: float = 64.0) -> float:
    """f(X) = sum_i max(0, max_{j in X} s_ij), blocked over points (O(block * |X|) memory)."""
    emb = _prepare(embeddings, normalize)
    sel = np.fromiter((int(i) for i in selected), dtype=np.int64)
    n = emb.shape[0]
    if sel.size == 0 or n == 0:
        return 0.0
    if sel.min() < 0 or sel.max() >= n:
        raise ValueError(f"selected indices must be in [0, {n})")
    centres = emb[sel]
    total = 0.0
    step = rows_per_block(sel.size, memory_budget_mb, itemsize=8)
    for s in range(0, n, step):
        best = (emb[s:s + step] @ centres.T).max(axis=1).astype(np.float64)
        total += float(np.maximum(best, 0.0).sum())
    return total

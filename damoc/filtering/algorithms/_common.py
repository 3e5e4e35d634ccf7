"""Argument checks shared by the selection algorithms (kept here so the package is registry-free)."""
from __future__ import annotations

import numpy as np


def as_embeddings(embeddings: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """A C-contiguous 2-D float array; float32 stays float32 (mat-vecs are memory-bound), else float64."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {emb.shape}")
    dtype = np.float32 if emb.dtype == np.float32 else np.float64
    emb = np.ascontiguousarray(emb, dtype=dtype)
    if not np.isfinite(emb).all():
        raise ValueError(f"{name} contain NaN or inf")
    return emb


def check_n_select(n_select: int, n: int) -> int:
    """n_select must be an int in [0, n]; returned as a Python int."""
    if isinstance(n_select, bool) or int(n_select) != n_select:
        raise ValueError(f"n_select must be an integer, got {n_select!r}")
    n_select = int(n_select)
    if n_select > n:
        raise ValueError(f"cannot keep {n_select} rows: only {n} rows to choose from "
                         f"(n_select must be in [0, {n}])")
    if n_select < 0:
        raise ValueError(f"n_select must be in [0, {n}], got {n_select}")
    return n_select


def unit_rows(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), same dtype."""
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms == 0, 1, norms).astype(emb.dtype)


def rows_per_block(n: int, memory_budget_mb: float, itemsize: int = 4) -> int:
    """How many kernel rows of length n fit in `memory_budget_mb` (at least 1)."""
    return max(1, int(memory_budget_mb * 2**20 // (max(n, 1) * itemsize)))

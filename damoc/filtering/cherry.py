"""Cherry LLM (Li et al. 2024, "From Quantity to Quality"): IFD-based cherry picking per cluster (hybrid).

The paper clusters instruction embeddings with K-means, trains a "pre-experienced" model on ~10 samples
per cluster, then keeps the samples with the highest IFD (< 1) under that model. Simplification here: the
IFD comes from the scorer LM as it is (no pre-experience fine-tuning step), and the clusters are used for
the selection itself: each cluster gets a share of the rows to keep proportional to its size (largest
remainder), filled with its highest IFD < 1; unfilled places go to the highest remaining IFD < 1
overall, then to IFD >= 1 closest to 1. K-means is seeded, so the result is deterministic per seed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field

from damoc.data.schema import Sample
from damoc.filtering.base import FilterContext, SampleFilter, register
from damoc.filtering.scoring import ScorerSettings, ifd, scorer_path


class CherrySettings(ScorerSettings):
    clusters: int = Field(100, ge=1, description="K-means clusters over the embeddings (capped at the row count)")


def kmeans_labels(emb: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Seeded K-means labels (k capped at the row count)."""
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(emb)))
    if k == 1:
        return np.zeros(len(emb), dtype=np.int64)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(np.asarray(emb, dtype=np.float64))


def proportional_quota(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer shares of `total` proportional to `sizes` (largest remainder, ties by lower index)."""
    exact = sizes * total / max(1, sizes.sum())
    quota = np.floor(exact).astype(int)
    rest = total - quota.sum()
    order = sorted(range(len(sizes)), key=lambda c: (-(exact[c] - quota[c]), c))
    for c in order[:rest]:
        quota[c] += 1
    return np.minimum(quota, sizes)


def ifd_rank(score: float, i: int) -> tuple[int, float, int]:
    """Sort key: IFD < 1 highest first, then IFD >= 1 closest to 1 first, then nan; ties by index."""
    if score < 1.0:
        return (0, -score, i)
    return (2, 0.0, i) if np.isnan(score) else (1, score, i)


def cherry_select(scores: np.ndarray, labels: np.ndarray, n_select: int) -> list[int]:
    """Per cluster, its proportional share of the highest IFD < 1; the remainder by `ifd_rank` overall."""
    n = len(scores)
    k = int(labels.max()) + 1 if n else 0
    quota = proportional_quota(np.bincount(labels, minlength=k), n_select)
    picked: list[int] = []
    for c in range(k):
        members = [i for i in range(n) if labels[i] == c and scores[i] < 1.0]
        picked += sorted(members, key=lambda i: ifd_rank(scores[i], i))[:quota[c]]
    chosen = set(picked)
    rest = sorted((i for i in range(n) if i not in chosen), key=lambda i: ifd_rank(scores[i], i))
    return picked + rest[:n_select - len(picked)]


@register
class CherryFilter(SampleFilter):
    name = "cherry"
    description = "Cherry: K-means clusters of embeddings, highest IFD (< 1) per cluster from a scorer LM (hybrid)"
    needs_embeddings = True
    needs_scorer = True
    Settings = CherrySettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: CherrySettings, context: FilterContext | None = None) -> list[int]:
        emb = self.embeddings_for(embeddings, samples)
        scores = ifd(samples, scorer_path(self.name, settings, context), settings)
        picked = cherry_select(scores, kmeans_labels(emb, settings.clusters, seed), n_select)
        if context is not None:
            context.stats.update({"objective": float(np.nanmean(scores[picked])) if picked else None,
                                  "objective_name": "mean IFD of kept rows"})
        return picked

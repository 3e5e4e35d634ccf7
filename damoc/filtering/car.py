"""CaR, Cluster and Ranking (Ge et al. 2024): a quality ranking plus per-cluster diversity (hybrid).

A quality scorer ranks the samples (here the scorer LM's expected 1..6 quality rating after Deita's
quality prompt; CaR trains its own reward model). The embeddings are reduced by PCA to `pca_variance` of
their variance and clustered by K-means with k = floor(sqrt(N / 2)) (or `clusters`). The kept rows are the
top n1 = round(`top_fraction` x the number to keep) by quality overall, then the clusters take turns
(clusters in order of their best remaining score) giving their next best row — CaR's top n2 per cluster,
with n2 growing until the number to keep is reached. PCA and K-means are seeded: deterministic per seed.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from pydantic import Field

from damoc.data.schema import Sample
from damoc.filtering.base import FilterContext, SampleFilter, register
from damoc.filtering.cherry import kmeans_labels
from damoc.filtering.scoring import ScorerSettings, quality_scores, scorer_path


class CaRSettings(ScorerSettings):
    top_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of the rows to keep taken as the top "
                                "by quality overall (n1); the rest come per cluster (n2)")
    clusters: int | None = Field(None, ge=1, description="K-means clusters; null: floor(sqrt(N/2)) as in CaR")
    pca_variance: float = Field(0.95, gt=0.0, le=1.0, description="PCA keeps this share of the embedding variance "
                                "before K-means")


def car_select(scores: np.ndarray, labels: np.ndarray, n_select: int, n_top: int) -> list[int]:
    n = len(scores)
    order = [int(i) for i in np.lexsort((np.arange(n), -scores))]  # best first
    picked = order[:n_top]
    chosen = set(picked)
    queues: dict[int, list[int]] = {}
    for i in order:
        if i not in chosen:
            queues.setdefault(int(labels[i]), []).append(i)
    while len(picked) < n_select:
        # One round: every non-empty cluster gives its best remaining row, clusters by that row's rank.
        heads = sorted((q[0] for q in queues.values() if q), key=order.index)
        for i in heads[:n_select - len(picked)]:
            picked.append(i)
            queues[int(labels[i])].pop(0)
    return picked


@register
class CaRFilter(SampleFilter):
    name = "car"
    description = "CaR: top by scorer-LM quality, then the best of each K-means cluster in turn (hybrid)"
    needs_embeddings = True
    needs_scorer = True
    Settings = CaRSettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: CaRSettings, context: FilterContext | None = None) -> list[int]:
        from sklearn.decomposition import PCA

        emb = np.asarray(self.embeddings_for(embeddings, samples), dtype=np.float64)
        n = len(emb)
        scores = quality_scores(samples, scorer_path(self.name, settings, context), settings)
        reduced = emb
        if n >= 2 and settings.pca_variance < 1.0:
            reduced = PCA(n_components=settings.pca_variance, svd_solver="full", random_state=seed).fit_transform(emb)
        k = settings.clusters or max(1, math.floor(math.sqrt(n / 2)))
        labels = kmeans_labels(reduced, k, seed)
        n_top = min(n_select, round(settings.top_fraction * n_select))
        picked = car_select(scores, labels, n_select, n_top)
        if context is not None:
            context.stats.update({"car_clusters": int(labels.max()) + 1 if n else 0, "car_top_overall": n_top})
        return picked

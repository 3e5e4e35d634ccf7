"""Stage 1 — data filtering: keep a ratio of the training set with a registered method.

Adding a method: write a module with a `@register`-ed `SampleFilter` subclass (with its own `Settings`)
and import it below — or load it as a plugin (see damoc.registry). Nothing else changes: the config
validates its name and settings against the registry, and docs and the KFP UI help text list it.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel

from damoc.data.schema import Sample
from damoc.filtering.base import FILTERS, FilterContext, SampleFilter, available_filters, get_filter, register
from damoc.filtering import (alpagasus, car, cherry, deita, dq, graphcut, kcenter, less, lma, mods,  # noqa: F401
                             passthrough, random_filter, superfiltering)  # (register)
from damoc.registry import validate_settings

__all__ = ["FILTERS", "FilterContext", "SampleFilter", "available_filters", "cluster_coverage", "filter_samples",
           "get_filter", "register"]


def cluster_coverage(embeddings: np.ndarray, kept: Sequence[int], *, clusters: int = 10, seed: int = 0) -> dict:
    """How the kept rows cover the data: seeded K-means on the embeddings, rows kept vs total per cluster.

    Clusters are listed largest first. `min_kept_share` is the smallest kept/total over clusters (a
    selection that skips a region of the data shows up as a cluster with a small share); `expected_share`
    is the overall kept fraction for comparison.
    """
    from damoc.filtering.cherry import kmeans_labels

    n = len(embeddings)
    labels = kmeans_labels(embeddings, clusters, seed) if n else np.zeros(0, dtype=np.int64)
    k = int(labels.max()) + 1 if n else 0
    total = np.bincount(labels, minlength=k)
    kept_counts = np.bincount(labels[np.asarray(list(kept), dtype=np.int64)], minlength=k)
    order = sorted(range(k), key=lambda c: (-total[c], c))
    per = [{"cluster": i, "total": int(total[c]), "kept": int(kept_counts[c])} for i, c in enumerate(order)]
    shares = [kept_counts[c] / total[c] for c in order if total[c]]
    return {"clusters": k, "per_cluster": per, "min_kept_share": float(min(shares)) if shares else None,
            "expected_share": len(kept) / n if n else None}


def filter_samples(samples: Sequence[Sample], method: str, ratio: float, *, seed: int = 0,
                   embedding_model: str | None = None, settings: BaseModel | dict[str, Any] | None = None,
                   progress: bool = False, scorer_model: str | None = None,
                   target_samples: Sequence[Sample] | None = None, embed: str = "whole",
                   embedding_cache: bool = True, coverage: bool | None = None,
                   coverage_clusters: int = 10) -> tuple[list[Sample], dict[str, Any]]:
    """Keep max(1, round(ratio * n)) samples chosen by `method`, returned in their original order.

    A pass-through method (`none`) or ratio 1.0 keeps everything (no embedding). `settings` are the
    method's own (its `Settings` model or a dict validated against it; defaults when omitted).
    scorer_model: the run's small causal LM, used by scorer-based methods whose own `scorer_model` is null.
    target_samples: the run's eval/validation samples (LESS's target set).
    embed: what is embedded, "whole" or "qa_separate" (see damoc.embedding); embedding_cache: reuse cached
    embeddings of the same texts. coverage: report how the kept rows cover `coverage_clusters` K-means
    clusters of the embeddings (None: when the method embedded the samples anyway).
    Stats: method, n_in, n_out, ratio, seconds (total wall time), embed_seconds, select_seconds, the
    embedding stats (embed_mode, embed_texts, embed_chunked, embed_cache) when embedded, `coverage`, and
    method-specific entries (e.g. objective, objective_name).
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    start = time.perf_counter()
    samples = list(samples)
    n = len(samples)
    filt = get_filter(method)
    if not isinstance(settings, BaseModel):
        settings = validate_settings(filt, settings, f"filter.options.{method}")
    stats: dict[str, Any] = {"method": method, "n_in": n, "ratio": ratio, "embed_seconds": 0.0,
                             "select_seconds": 0.0}

    if filt.passes_through or ratio == 1.0:
        kept = samples
    else:
        if n == 0:
            raise ValueError(f"filter {method!r}: no training rows to choose from (ratio {ratio})")
        n_select = min(n, max(1, round(ratio * n)))
        embeddings = None
        if filt.needs_embeddings or coverage:
            from damoc.embedding import embed_samples

            t0 = time.perf_counter()
            embeddings, embed_stats = embed_samples(samples, embedding_model, mode=embed,  # type: ignore[arg-type]
                                                    cache=embedding_cache, progress=progress)
            stats["embed_seconds"] = time.perf_counter() - t0
            stats.update(embed_stats)
        context = FilterContext(scorer_model=scorer_model, target_samples=target_samples, progress=progress)
        kwargs: dict[str, Any] = {"context": context} if filt.takes_context() else {}
        t0 = time.perf_counter()
        indices = filt.select(n_select, embeddings=embeddings if filt.needs_embeddings else None,
                              samples=samples, seed=seed, settings=settings, **kwargs)
        stats["select_seconds"] = time.perf_counter() - t0
        if len(set(indices)) != len(indices) or len(indices) != n_select:
            raise RuntimeError(f"filter {method!r} returned {len(indices)} indices "
                               f"({len(set(indices))} distinct), expected {n_select}")
        kept = [samples[i] for i in sorted(indices)]
        stats.update(context.stats)
        if embeddings is not None and coverage is not False:
            stats["coverage"] = cluster_coverage(embeddings, indices, clusters=coverage_clusters, seed=seed)

    stats["n_out"] = len(kept)
    stats["seconds"] = time.perf_counter() - start
    return kept, stats

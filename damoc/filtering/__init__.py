"""Stage 1 — data filtering: keep a ratio of the training set with a registered method.

Adding a method: write a module with a `@register`-ed `SampleFilter` subclass (with its own `Settings`)
and import it below — or load it as a plugin (see damoc.registry). Nothing else changes: the config
validates its name and settings against the registry, and docs and the KFP UI help text list it.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from pydantic import BaseModel

from damoc.data.schema import Sample
from damoc.filtering.base import FILTERS, SampleFilter, available_filters, get_filter, register
from damoc.filtering import dq, graphcut, kcenter, lma, passthrough, random_filter  # noqa: F401  (register)
from damoc.registry import validate_settings

__all__ = ["FILTERS", "SampleFilter", "available_filters", "filter_samples", "get_filter", "register"]


def filter_samples(samples: Sequence[Sample], method: str, ratio: float, *, seed: int = 0,
                   embedding_model: str | None = None, settings: BaseModel | dict[str, Any] | None = None,
                   progress: bool = False) -> tuple[list[Sample], dict[str, Any]]:
    """Keep max(1, round(ratio * n)) samples chosen by `method`, returned in their original order.

    A pass-through method (`none`) or ratio 1.0 keeps everything (no embedding). `settings` are the
    method's own (its `Settings` model or a dict validated against it; defaults when omitted).
    Stats: method, n_in, n_out, ratio, seconds (total wall time) and embed_seconds.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    start = time.perf_counter()
    samples = list(samples)
    n = len(samples)
    embed_seconds = 0.0
    filt = get_filter(method)
    if not isinstance(settings, BaseModel):
        settings = validate_settings(filt, settings, f"filter.options.{method}")

    if filt.passes_through or ratio == 1.0 or n == 0:
        kept = samples
    else:
        n_select = min(n, max(1, round(ratio * n)))
        embeddings = None
        if filt.needs_embeddings:
            from damoc.embedding import embed_texts

            t0 = time.perf_counter()
            embeddings = embed_texts([s.text for s in samples], embedding_model, progress=progress)
            embed_seconds = time.perf_counter() - t0
        indices = filt.select(n_select, embeddings=embeddings, samples=samples, seed=seed, settings=settings)
        if len(set(indices)) != len(indices) or len(indices) != n_select:
            raise RuntimeError(f"filter {method!r} returned {len(indices)} indices "
                               f"({len(set(indices))} distinct), expected {n_select}")
        kept = [samples[i] for i in sorted(indices)]

    stats = {"method": method, "n_in": n, "n_out": len(kept), "ratio": ratio,
             "seconds": time.perf_counter() - start, "embed_seconds": embed_seconds}
    return kept, stats

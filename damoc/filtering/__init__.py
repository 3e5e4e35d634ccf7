"""Stage 1 — data filtering: keep a ratio of the training set with a registered method.

Adding a method: write a module with a `@register`-ed `SampleFilter` subclass and import it below.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from damoc.data.schema import Sample
from damoc.filtering.base import SampleFilter, available_filters, get_filter, register
from damoc.filtering import graphcut, random_filter  # noqa: F401  (imports register the filters)

__all__ = ["SampleFilter", "available_filters", "filter_samples", "get_filter", "register"]


def filter_samples(samples: Sequence[Sample], method: str, ratio: float, *, seed: int = 0,
                   embedding_model: str | None = None, graphcut_lambda: float = 0.4,
                   progress: bool = False) -> tuple[list[Sample], dict[str, Any]]:
    """Keep max(1, round(ratio * n)) samples chosen by `method`, returned in their original order.

    method "none" or ratio 1.0 keeps everything (no embedding). Stats: method, n_in, n_out, ratio,
    seconds (total wall time) and embed_seconds (0 when no embeddings were computed).
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    start = time.perf_counter()
    samples = list(samples)
    n = len(samples)
    embed_seconds = 0.0

    if method == "none" or ratio == 1.0 or n == 0:
        if method != "none":
            get_filter(method)  # still reject typos
        kept = samples
    else:
        filt = get_filter(method)
        n_select = min(n, max(1, round(ratio * n)))
        embeddings = None
        if filt.needs_embeddings:
            from damoc.embedding import embed_texts

            t0 = time.perf_counter()
            embeddings = embed_texts([s.text for s in samples], embedding_model, progress=progress)
            embed_seconds = time.perf_counter() - t0
        # Pass each filter only the config options it declares.
        options = {"graphcut_lambda": graphcut_lambda}
        params = {kwarg: options[cfg] for cfg, kwarg in filt.config_params.items()}
        indices = filt.select(n_select, embeddings=embeddings, samples=samples, seed=seed, **params)
        if len(set(indices)) != len(indices) or len(indices) != n_select:
            raise RuntimeError(f"filter {method!r} returned {len(indices)} indices "
                               f"({len(set(indices))} distinct), expected {n_select}")
        kept = [samples[i] for i in sorted(indices)]

    stats = {"method": method, "n_in": n, "n_out": len(kept), "ratio": ratio,
             "seconds": time.perf_counter() - start, "embed_seconds": embed_seconds}
    return kept, stats
